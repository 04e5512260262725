"""The closed-form counter against PyTorch's own figures, on random specs covering every option."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import ArchSpec, round_width
from nas.blocks import BLOCKS
from nas.count import count_macs, count_params, fit_width
from nas.model import BLOCK_MODULES, build_model


def random_spec(rng: random.Random, block: str) -> ArchSpec:
    info = BLOCKS[block]
    n = rng.randint(1, 4)
    image = rng.choice([8, 12, 16, 20, 32])
    while image < 2 ** (n - 1):
        n -= 1
    spec = dict(
        blocks=[rng.randint(1, 3) for _ in range(n)],
        channels=[rng.choice([4, 8, 12, 16, 24]) for _ in range(n)],
        stem_channels=rng.choice([None, 4, 8, 16]),
        stem_kernel=rng.choice([1, 3, 5, 7, 9, 11]),
        kernel=rng.choice([1, 3, 5, 7]) if rng.random() < 0.6 else [rng.choice([1, 3, 5]) for _ in range(n)],
        skip_kernel=rng.choice([1, 3, 5]) if info.projection_skip else 1,
        block=block,
        **{name: rng.choice([1, 2, 3, 4, 6]) for name in info.fields},
        se=rng.choice([0, 0, 2, 4, 16]),
        dropout=rng.choice([0.0, 0.2]),
        drop_path=rng.choice([0.0, 0.1]),
        classes=rng.choice([2, 10, 100]),
        image_size=image,
        in_channels=rng.choice([1, 3]),
    )
    final = ArchSpec(**spec).final_size
    spec["pool"] = rng.choice(["global"] + [p for p in (1, 2, 3, 4) if final % p == 0])
    return ArchSpec(**spec)


PER_BLOCK = 150
BY_BLOCK = {block: [random_spec(random.Random(seed), block) for seed in range(PER_BLOCK)] for block in BLOCKS}
SPECS = [spec for specs in BY_BLOCK.values() for spec in specs]
REFERENCES = [  # published counts: 10 classes, 3x3 stem, K=1, global pool, basic blocks
    (dict(blocks=[2, 2, 2, 2], channels=[64, 128, 256, 512]), 11_173_962),
    (dict(blocks=[3, 5, 3], channels=[64, 128, 256]), 4_918_602),
    (dict(blocks=[2, 1, 1, 1], channels=[64, 128, 256, 512], stem_kernel=5), 4_980_298),
]


def test_random_specs_cover_every_option():
    seen = lambda f: {str(f(s)) for s in SPECS}  # noqa: E731
    assert seen(lambda s: s.block) == set(BLOCKS)
    assert {"global", "1", "2", "4"} <= seen(lambda s: s.pool)
    assert {"1", "3", "5"} <= seen(lambda s: s.skip_kernel)
    assert len(seen(lambda s: s.se)) == 4 and len(seen(lambda s: s.stem_kernel)) == 6
    assert any(len(set(s.kernel)) > 1 for s in SPECS)
    assert any(s.stem_channels != s.channels[0] for s in SPECS)
    assert any(s.dropout for s in SPECS) and any(s.drop_path for s in SPECS)
    for block, info in BLOCKS.items():  # each block's own fields take several values
        for name in info.fields:
            assert len({getattr(s, name) for s in BY_BLOCK[block]}) >= 4


def test_every_registered_block_has_a_module_and_every_module_an_entry():
    assert set(BLOCK_MODULES) == set(BLOCKS)


@pytest.mark.parametrize("kwargs,expected", REFERENCES)
def test_published_reference_counts(kwargs, expected):
    spec = ArchSpec(**kwargs)
    assert count_params(spec) == expected
    assert sum(p.numel() for p in build_model(spec).parameters()) == expected


@pytest.mark.parametrize("block", list(BLOCKS))
def test_counts_equal_torch_on_random_specs(block):
    """For every registered block: count_params == PyTorch's numel sum, and 2 * count_macs ==
    FlopCounterMode's FLOPs, on random specs covering every option."""
    torch.manual_seed(0)
    for spec in BY_BLOCK[block]:
        model = build_model(spec).eval()
        assert count_params(spec) == sum(p.numel() for p in model.parameters()), spec
        x = torch.randn(1, spec.in_channels, spec.image_size, spec.image_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = model(x)
        assert out.shape == (1, spec.classes)
        assert 2 * count_macs(spec) == counter.get_total_flops(), spec


def test_macs_scale_with_the_batch():
    spec = SPECS[7]
    x = torch.randn(3, spec.in_channels, spec.image_size, spec.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        build_model(spec).eval()(x)
    assert counter.get_total_flops() == 3 * 2 * count_macs(spec)


def test_pool_size_changes_the_head():
    common = dict(blocks=[1, 1], channels=[8, 16], image_size=16)  # final map 8x8
    heads = {p: count_params(ArchSpec(pool=p, **common)) for p in ("global", 1, 2, 4, 8)}
    assert heads[1] - heads["global"] == 16 * (64 - 1) * 10
    assert heads[8] == heads["global"]  # an 8x8 pool over an 8x8 map is global pooling
    assert heads[1] > heads[2] > heads[4] > heads[8]


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("budget", [50_000, 1_000_000, 5_000_000])
def test_fit_width_is_the_largest_multiplier_within_budget(budget, block):
    spec = ArchSpec(blocks=[3, 5, 3], channels=[64, 128, 256], kernel=[3, 5, 3], se=8, block=block)
    fitted = fit_width(spec, budget)
    assert count_params(fitted) <= budget
    assert all(c % 8 == 0 for c in fitted.channels + (fitted.stem_channels,))
    # Brute force over a fine grid of multipliers: none within budget beats the fitted count.
    best = 0
    for i in range(1, 4000):
        m = i / 1000
        chans = tuple(round_width(c * m) for c in spec.channels)
        cand = ArchSpec(**{**spec.to_dict(), "channels": chans, "stem_channels": round_width(64 * m)})
        if count_params(cand) <= budget:
            best = max(best, count_params(cand))
    assert count_params(fitted) == best


def test_fit_width_respects_a_mac_limit_too():
    spec = ArchSpec(blocks=[1, 1, 1], channels=[16, 32, 64])
    only_params = fit_width(spec, 100_000)
    both = fit_width(spec, 100_000, max_macs=10_000_000)
    assert count_macs(only_params) > 10_000_000  # the limit binds here
    assert count_params(both) <= 100_000 and count_macs(both) <= 10_000_000
    wider = ArchSpec(**{**both.to_dict(), "channels": [c + 8 for c in both.channels], "stem_channels": both.stem_channels + 8})
    assert count_macs(wider) > 10_000_000 or count_params(wider) > 100_000
    with pytest.raises(ValueError, match="MAC limit of 1,000"):
        fit_width(spec, 100_000, max_macs=1000)


def test_fit_width_rejects_a_budget_nothing_fits():
    with pytest.raises(ValueError, match="over the budget"):
        fit_width(ArchSpec(blocks=[16, 16], channels=[64, 64], classes=1000), 1000)


def test_counter_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from nas.arch import ArchSpec; from nas.count import count_params; "
        "from nas.space import load_space; import random; "
        "load_space('tiny').sample(random.Random(0)); count_params(ArchSpec(blocks=[1], channels=[8])); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("a,c,stride", [(64, 256, 1), (256, 256, 1), (256, 512, 2)])
def test_bottleneck_term_equals_torchvisions_resnet50_block(a, c, stride):
    from torchvision.models.resnet import Bottleneck, conv1x1

    from nas.blocks import bottleneck_params

    downsample = torch.nn.Sequential(conv1x1(a, c, stride), torch.nn.BatchNorm2d(c)) if stride != 1 or a != c else None
    reference = Bottleneck(a, c // 4, stride, downsample)
    spec = ArchSpec(blocks=[1], channels=[c], block="bottleneck")  # expansion 4, skip_kernel 1, no SE
    assert bottleneck_params(spec, a, c, 3, stride) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("a,c,stride,t", [(32, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (64, 96, 1, 4)])
def test_mbconv_term_equals_torchvisions_inverted_residual(a, c, stride, t):
    from torchvision.models.mobilenetv2 import InvertedResidual

    from nas.blocks import mbconv_params

    reference = InvertedResidual(a, c, stride, t)
    spec = ArchSpec(blocks=[1], channels=[c], block="mbconv", expansion=t)
    assert mbconv_params(spec, a, c, 3, stride) == sum(p.numel() for p in reference.parameters())
    assert reference.use_res_connect == (stride == 1 and a == c)



def test_fit_width_stays_within_budget_where_a_vanishing_skip_makes_the_count_dip():
    """A stem of 16 and a first stage of 12: at multiplier 0.995 they round to 16 and 8 (a skip
    conv), at 1.0 to 16 and 16 (no skip), so the count drops as the widths grow."""
    spec = ArchSpec(blocks=[1], channels=[12], stem_channels=16, stem_kernel=5, skip_kernel=5, se=4)
    wide = ArchSpec(blocks=[1], channels=[16], stem_channels=16, stem_kernel=5, skip_kernel=5, se=4)
    narrow = ArchSpec(blocks=[1], channels=[8], stem_channels=16, stem_kernel=5, skip_kernel=5, se=4)
    assert count_params(wide) < count_params(narrow)  # the dip
    for budget in range(count_params(narrow) - 500, count_params(narrow) + 500, 37):
        fitted = fit_width(spec, budget)
        assert count_params(fitted) <= budget
