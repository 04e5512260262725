import random

import pytest
import torch
import torch.nn.functional as F

from nas.augment import TrainBatches, chunk_images, cutmix, cutout, mixup, random_crop, random_flip, random_rotate
from nas.recipe import Recipe


def images(n=16, size=12, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).float()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "op",
    [
        lambda x, g: random_crop(x, 4, g),
        lambda x, g: random_crop(x, 2, g, "zeros"),
        random_flip,
        lambda x, g: random_rotate(x, 15, g),
        lambda x, g: cutout(x, 4, 2, g),
    ],
)
def test_ops_keep_shape_dtype_and_are_reproducible(op):
    x = images()
    a, b = op(x, gen(1)), op(x, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, op(x, gen(2)))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crops_are_windows_of_the_padded_image(mode):
    x, p = images(8, 10), 3
    out = random_crop(x, p, gen(), mode)
    padded = F.pad(x, (p,) * 4, mode="reflect" if mode == "reflect" else "constant")
    for img, pad in zip(out, padded):
        windows = [pad[:, dy : dy + 10, dx : dx + 10] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]
        assert any(torch.equal(img, w) for w in windows)


def test_flip_gives_the_image_or_its_mirror():
    x = images()
    out = random_flip(x, gen())
    kinds = [torch.equal(o, i) or torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    assert all(kinds)
    assert 0 < sum(torch.equal(o, i) for o, i in zip(out, x)) < len(x)


def test_cutout_zeroes_at_most_the_holes():
    x = images() + 1  # no zeros before
    out = cutout(x, 4, 1, gen())
    zeroed = (out == 0).all(1).sum((1, 2))
    assert (zeroed <= 16).all() and (zeroed > 0).any()
    assert torch.equal(out[out != 0], x[out != 0])


def test_mixup_and_cutmix_targets_sum_to_one():
    x, t = images(), F.one_hot(torch.arange(16) % 10, 10).float()
    for lam in (0.0, 0.3, 0.9):
        _, tm = mixup(x, t, lam, gen())
        xc, tc = cutmix(x, t, lam, random.Random(0), gen())
        assert torch.allclose(tm.sum(1), torch.ones(16)) and torch.allclose(tc.sum(1), torch.ones(16))
        assert xc.shape == x.shape


def test_cutmix_target_weight_is_the_pasted_area():
    x = torch.zeros(2, 1, 10, 10)
    x[1] = 1.0
    t = torch.eye(2)
    out, tt = cutmix(x, t, 0.75, random.Random(3), torch.Generator().manual_seed(0))
    for img, target, own in zip(out, tt, (0, 1)):
        foreign = (img != own).float().mean().item()
        assert target[1 - own].item() == pytest.approx(foreign) or foreign == 0


def test_train_batches_shapes_targets_and_reproducibility():
    x = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(100) % 10
    r = Recipe(batch_size=32, mixup=0.2, cutmix=1.0, cutout=3, rotation=5)
    make = lambda: TrainBatches(x, y, r, (0.5,) * 3, (0.25,) * 3, 10, torch.float32, seed=7,  # noqa: E731
                                layout=torch.channels_last)
    a, b = list(make()), list(make())
    assert len(a) == 3  # 100 // 32, the remainder dropped
    for (xa, ta), (xb, tb) in zip(a, b):
        assert xa.shape == (32, 3, 8, 8) and xa.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
        assert ta.shape == (32, 10) and torch.allclose(ta.sum(1), torch.ones(32))
    plain = TrainBatches(x, y, Recipe(batch_size=50), (0.5,) * 3, (0.25,) * 3, 10, torch.float32, seed=0)
    xb, tb = next(iter(plain))
    assert tb.dtype == torch.int64 and xb.mean().abs() < 1.0  # normalised
    epoch1, epoch2 = [t for _, t in plain], [t for _, t in plain]
    assert not all(torch.equal(p, q) for p, q in zip(epoch1, epoch2))  # a new permutation each epoch


def test_chunked_epochs_use_each_image_at_most_once(monkeypatch):
    import nas.augment

    monkeypatch.setattr(nas.augment, "CHUNK_BYTES", 40 * 4 * 3 * 4 * 4)  # 40 float images: one 32-image batch
    monkeypatch.setattr(nas.augment, "CPU_CHUNK_BYTES", 40 * 4 * 3 * 4 * 4)  # the same on the CPU
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 4, 4).contiguous()
    y = torch.arange(100)
    batches = TrainBatches(x, y, Recipe(batch_size=32, crop_padding=0, flip=False), (0.0,) * 3, (1 / 255,) * 3,
                           100, torch.float32, seed=0)  # fmt: skip
    epoch = list(batches)
    assert len(epoch) == 3 and all(len(t) == 32 for _, t in epoch)
    labels = torch.cat([t for _, t in epoch])
    assert len(set(labels.tolist())) == 96  # no image twice
    images = torch.cat([x for x, _ in epoch])[:, 0, 0, 0]  # normalised with mean 0, std 1: the raw value
    assert torch.equal(images, labels.float())  # image i still travels with label i


def test_an_epoch_of_augmentation_never_makes_the_host_wait(op_log):
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(96) % 10
    every_op = Recipe(batch_size=16, crop_padding=2, flip=True, rotation=10, cutout=3, cutout_holes=2, mixup=0.4,
                      cutmix=1.0)  # fmt: skip
    for recipe in (every_op, Recipe(batch_size=16, pad_mode="zeros")):
        with op_log() as setup:
            batches = TrainBatches(x, y, recipe, (0.5, 0.4, 0.3), (0.2,) * 3, 10, torch.bfloat16, seed=0)
        with op_log() as epoch:
            out = [(xb.sum(), tb.sum()) for xb, tb in batches]  # touch every batch
        assert len(out) == 6
        assert "lift_fresh" in setup.ops  # the normalisation constants: built once, before any epoch
        assert not epoch.syncs(), epoch.syncs()
        assert {"index", "randperm"} <= set(epoch.ops)  # the gathers and the permutation did run in the mode


@pytest.mark.parametrize(
    "shape,batch,images",
    [((3, 32, 32), 512, 8192), ((3, 32, 32), 100, 8100), ((3, 128, 128), 512, 512), ((3, 224, 224), 64, 128),
     ((3, 224, 224), 512, 512)],  # fmt: skip
)
def test_chunks_are_sized_in_bytes_in_whole_batches(shape, batch, images):
    assert chunk_images(shape, batch) == images  # 96 MiB of float32 images, at least one batch


def test_large_images_are_augmented_in_smaller_chunks(monkeypatch):
    seen = []
    augment = TrainBatches.augment
    monkeypatch.setattr(TrainBatches, "augment", lambda self, x: seen.append(len(x)) or augment(self, x))
    for size, expected in ((8, [96]), (128, [32, 32, 32])):
        seen.clear()
        monkeypatch.setattr("nas.augment.CHUNK_BYTES", 4 * 3 * 8 * 8 * 96 if size == 8 else 4 * 3 * 128 * 128 * 40)
        x = torch.zeros(96, 3, size, size, dtype=torch.uint8)
        list(TrainBatches(x, torch.zeros(96, dtype=torch.long), Recipe(batch_size=16, crop_padding=0, flip=False),
                          (0.5,) * 3, (0.2,) * 3, 10, torch.float32, seed=0))  # fmt: skip
        assert seen == expected
