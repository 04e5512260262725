"""The closed-form counter against PyTorch's own figures, on random specs covering every option."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import ArchSpec, round_width
from nas.blocks import BLOCKS
from nas.count import count_macs, count_params, fit_width
from nas.model import BLOCK_MODULES, build_model


def random_spec(rng: random.Random) -> ArchSpec:
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
        skip_kernel=rng.choice([1, 3, 5]),
        block=rng.choice(list(BLOCKS)),
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


SPECS = [random_spec(random.Random(seed)) for seed in range(600)]
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


def test_every_registered_block_has_a_module_and_every_module_an_entry():
    assert set(BLOCK_MODULES) == set(BLOCKS)


@pytest.mark.parametrize("kwargs,expected", REFERENCES)
def test_published_reference_counts(kwargs, expected):
    spec = ArchSpec(**kwargs)
    assert count_params(spec) == expected
    assert sum(p.numel() for p in build_model(spec).parameters()) == expected


@pytest.mark.parametrize("chunk", range(6))
def test_counts_equal_torch_on_random_specs(chunk):
    """count_params == PyTorch's numel sum, and 2 * count_macs == FlopCounterMode's FLOPs."""
    torch.manual_seed(chunk)
    for spec in SPECS[chunk * 100 : (chunk + 1) * 100]:
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


@pytest.mark.parametrize("budget", [50_000, 1_000_000, 5_000_000])
def test_fit_width_is_the_largest_multiplier_within_budget(budget):
    spec = ArchSpec(blocks=[3, 5, 3], channels=[64, 128, 256], kernel=[3, 5, 3], se=8)
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
