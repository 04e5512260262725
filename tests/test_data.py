import os
import pickle

import numpy as np
import pytest
import torch

from nas import data
from nas.data import channel_stats, load_dataset, synthetic, test_split, validation_split


def test_synthetic_is_deterministic_balanced_uint8():
    a, b = synthetic(200), synthetic(200)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape == (200, 3, 32, 32)
    assert torch.bincount(a.train_y).tolist() == [20] * 10
    assert not torch.equal(synthetic(200, seed=1).train_x, a.train_x)
    assert load_dataset("synthetic:200").shape == {"classes": 10, "image_size": 32, "in_channels": 3}


def test_validation_split_is_stratified_seeded_and_disjoint():
    ds = synthetic(1000)
    s = validation_split(ds, val_size=100, seed=3)
    assert len(s.val_y) == 100 and len(s.train_y) == 900
    assert torch.bincount(s.val_y).tolist() == [10] * 10
    assert torch.equal(s.val_x, validation_split(ds, val_size=100, seed=3).val_x)
    assert s.info["val_sha1"] != validation_split(ds, val_size=100, seed=4).info["val_sha1"]
    # disjoint: no validation image appears in the training part
    train_rows = {bytes(x.numpy()) for x in s.train_x}
    assert not any(bytes(x.numpy()) in train_rows for x in s.val_x)
    assert validation_split(ds).info["val_size"] == 100  # default: 10% (5,000 of CIFAR-10's 50,000)


def test_proxy_subset_is_a_stratified_fraction_of_the_training_part():
    s = validation_split(synthetic(1000), val_size=100, subset=0.5)
    assert len(s.train_y) == 450 and s.info["subset"] == 0.5
    assert torch.bincount(s.train_y).tolist() == [45] * 10


def test_test_split_trains_on_everything_and_scores_on_test():
    ds = synthetic(300)
    s = test_split(ds)
    assert torch.equal(s.train_x, ds.train_x) and torch.equal(s.val_y, ds.test_y)


def test_channel_stats_match_a_direct_computation():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert np.allclose(mean, f.mean((0, 2, 3)).numpy()) and np.allclose(std, f.std((0, 2, 3), unbiased=False).numpy())


@pytest.mark.parametrize("kwargs,message", [(dict(val_size=0), "validation size"), (dict(subset=1.5), "fraction")])
def test_bad_split_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validation_split(synthetic(100), **kwargs)


@pytest.mark.parametrize("name,message", [("mnist", "unknown dataset"), ("synthetic:abc", "synthetic:N"),
                                          ("imagefolder:/no/such/dir", "is missing")])  # fmt: skip
def test_bad_dataset_names(name, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name)


def _fake_cifar10(root):
    """torchvision's CIFAR-10 layout with tiny pickles (8 images per batch)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), "labels": list(range(8))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_cifar_is_read_from_data_dir_then_cached(tmp_path, monkeypatch):
    import torchvision

    _fake_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)  # meta file
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (40, 3, 32, 32) and ds.test_x.shape == (8, 3, 32, 32)
    assert ds.classes == [f"c{i}" for i in range(10)]
    assert (tmp_path / "nas-cache" / "cifar10.pt").exists()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", None)  # a second load never touches torchvision
    again = load_dataset("cifar10", tmp_path)
    assert torch.equal(again.train_x, ds.train_x)


def test_missing_cifar_says_where_to_put_which_files(tmp_path, monkeypatch):
    import torchvision

    def no_network(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    with pytest.raises(ValueError) as e:
        load_dataset("cifar10", tmp_path)
    text = str(e.value)
    assert "cifar-10-python.tar.gz" in text and str(tmp_path) in text and "--data-dir" in text


def _write_images(root, sizes):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, (h, w) in zip(("cat", "ant"), sizes):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_imagefolder_loads_sorted_classes_and_caches(tmp_path, monkeypatch):
    _write_images(tmp_path, [(12, 12), (12, 12)])
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["ant", "cat"] and ds.train_x.shape == (6, 3, 12, 12)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    monkeypatch.setattr(data, "decode_images", None)  # cached: nothing is decoded again
    assert torch.equal(load_dataset(f"imagefolder:{tmp_path}").train_x, ds.train_x)


def test_imagefolder_of_mixed_sizes_needs_image_size(tmp_path):
    _write_images(tmp_path, [(12, 12), (10, 14)])
    with pytest.raises(ValueError, match="--image-size"):
        load_dataset(f"imagefolder:{tmp_path}")
    assert load_dataset(f"imagefolder:{tmp_path}", image_size=8).train_x.shape == (6, 3, 8, 8)


def test_decoder_processes_give_the_pixels_one_process_gives(tmp_path, monkeypatch):
    from nas import decode

    _write_images(tmp_path, [(12, 12), (12, 12)])
    paths = sorted(str(p) for p in tmp_path.rglob("*.png"))
    monkeypatch.setattr(decode, "PER_PROCESS", 3)  # 12 images: 3 processes of 4 parts each
    alone = decode.decode_files(paths, None)
    assert alone.shape == (12, 3, 12, 12) and alone.dtype == np.uint8
    assert np.array_equal(decode.decode(paths, None, processes=3), alone)
    assert decode.decode(paths, 8, processes=3).shape == (12, 3, 8, 8)  # resized in the processes


def test_decoder_processes_report_a_bad_file_and_mixed_sizes_in_one_line(tmp_path, monkeypatch):
    from nas import decode

    _write_images(tmp_path, [(12, 12), (10, 14)])
    paths = sorted(str(p) for p in tmp_path.rglob("*.png"))
    monkeypatch.setattr(decode, "PER_PROCESS", 3)
    with pytest.raises(ValueError, match=r"images differ in size \(10x14 and 12x12\); pass --image-size N"):
        decode.decode(paths, None, processes=3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot decode image .*broken.png"):
        decode.decode(paths[:5] + [str(tmp_path / "broken.png")] + paths[5:], 12, processes=3)


# What `fit` does with a split's data before and while it trains, at 224 px, in a fresh process whose large
# allocations all come from the kernel (MALLOC_MMAP_THRESHOLD_), so that its peak resident memory is the peak
# of what it held. The augmentation chunk is made smaller (24 MiB) to keep the test light; on this scale one
# batch of 64 (37 MiB of floats) is larger than a chunk, as a batch of 512 is at 224 px on a GPU.
PEAK_SCRIPT = """
import json, re, torch
import nas.augment as A
from nas.data import Split
from nas.recipe import Recipe

def memory(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

A.CHUNK_BYTES = A.CPU_CHUNK_BYTES = 24 * 2**20  # the CPU chunks as a GPU's, only smaller
g = torch.Generator().manual_seed(0)
train, val = (torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g) for n in (192, 256))
split = Split(train, torch.arange(192) % 10, val, torch.arange(256) % 10, (0.5,) * 3, (0.25,) * 3, list("0123456789"))
held = sum(t.nbytes for t in (split.train_x, split.train_y, split.val_x, split.val_y))  # already resident here
open("/proc/self/clear_refs", "w").write("5")  # the peak so far := the memory now
before = memory("VmRSS")
prepared = A.prepare(split.val_x, A.Normalize(split.mean, split.std, val.device), torch.float32, torch.contiguous_format)
after_prepare = memory("VmHWM") - before
for x, t in A.TrainBatches(train, split.train_y, Recipe(batch_size=64, cutout=16), split.mean, split.std, 10,
                           torch.float32, seed=0):
    pass
print(json.dumps({"peak": memory("VmHWM") - before, "prepare": after_prepare, "prepared": prepared.nbytes,
                  "estimate": split.device_bytes(64) - held, "batch_1": split.device_bytes(1) - held}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures peak memory through Linux's /proc")
def test_the_device_memory_estimate_covers_the_measured_peak_at_224_px():
    import json
    import subprocess
    import sys

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], env=env, capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    # Preparing the evaluation images holds them once, plus a chunk (joining chunks held 2-3 copies).
    assert m["prepare"] < 1.2 * m["prepared"]
    assert m["peak"] <= m["estimate"] < 1.3 * m["peak"]  # measured: 303 MiB of 332 estimated
    assert m["batch_1"] < m["peak"]  # the estimate with batch_size=1 missed the batch-sized chunks
