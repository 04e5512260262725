import pytest
import torch

from nas.arch import ArchSpec
from nas.blocks import BLOCKS
from nas.model import build_model


def test_defaults_and_normalisation():
    spec = ArchSpec(blocks=[3, 5, 3], channels=[64, 128, 256])
    assert spec.stem_channels == 64 and spec.kernel == (3, 3, 3) and spec.blocks == (3, 5, 3)
    assert spec == ArchSpec(blocks=(3, 5, 3), channels=(64, 128, 256), kernel=3, stem_channels=64)
    assert spec.final_size == 8 and spec.head_features == 256
    assert ArchSpec(blocks=[1, 1], channels=[8, 8], image_size=32, pool="2").pool == 2


def test_dict_round_trip():
    spec = ArchSpec(blocks=[2, 1], channels=[16, 32], kernel=[5, 3], stem_kernel=7, skip_kernel=3,
                    block="preact", se=4, dropout=0.1, drop_path=0.2, pool=4, classes=100)  # fmt: skip
    d = spec.to_dict()
    assert d["kernel"] == [5, 3] and d["blocks"] == [2, 1]
    assert ArchSpec.from_dict(d) == spec
    assert ArchSpec(blocks=[1], channels=[8], kernel=[3]).to_dict()["kernel"] == 3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(blocks=[2, 2], channels=[16, 32], kernel=4), "odd"),
        (dict(blocks=[2, 2], channels=[16, 32], stem_kernel=2), "odd"),
        (dict(blocks=[2, 2], channels=[16, 32], skip_kernel=0), "odd"),
        (dict(blocks=[2, 0], channels=[16, 32]), "at least one block"),
        (dict(blocks=[], channels=[]), "at least one stage"),
        (dict(blocks=[2, 2], channels=[16]), "one per stage"),
        (dict(blocks=[2, 2], channels=[16, 32], kernel=[3, 3, 3]), "one size or one per stage"),
        (dict(blocks=[1, 1], channels=[8, 8], pool=3), "does not divide"),
        (dict(blocks=[1] * 6, channels=[8] * 6, image_size=16), "too small"),
        (dict(blocks=[1], channels=[8], block="dense"), "block must be one of"),
        (dict(blocks=[1], channels=[8], dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(blocks=[1], channels=[8], se=-1), "cannot be negative"),
        (dict(blocks=[1], channels=["8"]), "must be an integer"),
        (dict(blocks=[1], channels=[8], pool="max"), "pool must be"),
    ],
)
def test_impossible_specs_raise_one_clear_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        ArchSpec(**kwargs)
    text = str(e.value)
    assert "\n" not in text and text.endswith(".")


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown architecture key 'width'"):
        ArchSpec.from_dict({"blocks": [1], "channels": [8], "width": 3})
    with pytest.raises(ValueError, match="needs channels"):
        ArchSpec.from_dict({"blocks": [1]})


@pytest.mark.parametrize("block", list(BLOCKS))
def test_model_trains_a_step_in_train_mode(block):
    spec = ArchSpec(blocks=[1, 2], channels=[8, 16], block=block, se=4, dropout=0.1, drop_path=0.2, pool=2)
    model = build_model(spec).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_skip_is_a_kxk_conv_only_where_the_shape_changes():
    model = build_model(ArchSpec(blocks=[2, 2], channels=[8, 16], stem_channels=8, skip_kernel=3))
    skips = [b.skip for b in model.blocks]
    assert isinstance(skips[0], torch.nn.Identity) and isinstance(skips[1], torch.nn.Identity)
    assert skips[2][0].kernel_size == (3, 3) and skips[2][0].stride == (2, 2)
    assert isinstance(skips[3], torch.nn.Identity)


def test_drop_path_grows_linearly_over_depth():
    model = build_model(ArchSpec(blocks=[2, 3], channels=[8, 16], drop_path=0.2))
    rates = [b.drop_path.p for b in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates)


def test_block_only_fields_take_the_blocks_default_and_stay_out_of_other_blocks_dicts():
    assert "expansion" not in ArchSpec(blocks=[1], channels=[8]).to_dict()  # dicts stored by older nas compare equal
    assert ArchSpec(blocks=[1], channels=[8], block="bottleneck").expansion == BLOCKS["bottleneck"].fields["expansion"]
    spec = ArchSpec(blocks=[1], channels=[8], block="mbconv", expansion=3)
    assert spec.to_dict()["expansion"] == 3 and ArchSpec.from_dict(spec.to_dict()) == spec
    assert "expansion 3" in spec.describe() and "skip" not in spec.describe()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(block="basic", expansion=4), "expansion applies to bottleneck and mbconv blocks, not to basic"),
        (dict(block="mbconv", expansion=0), "expansion must be at least 1"),
        (dict(block="mbconv", skip_kernel=3), "no projection skip"),
        (dict(block="bottleneck", expansion="4"), "must be an integer"),
    ],
)
def test_block_fields_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArchSpec(blocks=[1], channels=[8], **kwargs)


def test_bottleneck_narrows_and_mbconv_widens_by_the_expansion():
    b = build_model(ArchSpec(blocks=[1], channels=[64], stem_channels=32, block="bottleneck", expansion=4)).blocks[0]
    assert (b.conv1.in_channels, b.conv1.out_channels, b.conv3.out_channels) == (32, 16, 64)
    m = build_model(ArchSpec(blocks=[2, 1], channels=[16, 24], block="mbconv", expansion=6)).blocks
    assert m[0].depthwise.groups == m[0].depthwise.out_channels == 96
    assert [blk.residual for blk in m] == [True, True, False]  # the stride-2 block changes the shape
    assert isinstance(build_model(ArchSpec(blocks=[1], channels=[8], block="mbconv", expansion=1)).blocks[0].expand,
                      torch.nn.Identity)  # fmt: skip
