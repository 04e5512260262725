import math
import random

import pandas as pd
import pytest
import torch

from nas import score
from nas.arch import ArchSpec
from nas.blocks import BLOCKS


def curve(accs, losses=None):
    return [{"epoch": e, "val_acc": a, "train_loss": (losses or [1.0] * len(accs))[e - 1]}
            for e, a in enumerate(accs, 1)]  # fmt: skip


def test_history_scores():
    h = curve([0.3, 0.4, 0.5], [2.0, 1.5, 1.25])
    assert score.val_acc(h) == 0.5 and score.tse(h) == -4.75
    power = curve([1 - 0.6 * e**-0.5 for e in range(1, 6)])  # an error falling as a power law
    assert score.extrapolated(power, horizon=30) == pytest.approx(1 - 0.6 * 30**-0.5)
    assert score.extrapolated(curve([0.4]), horizon=30) == 0.4  # one point fixes no slope
    worse = curve([0.5, 0.4])  # a curve going down is not extrapolated upward, nor further down
    assert score.extrapolated(worse) == pytest.approx(1 - math.exp((math.log(0.5) + math.log(0.6)) / 2))
    gaps = curve([0.3, math.nan, 0.5])  # epochs not scored are skipped
    assert score.extrapolated(gaps, horizon=3) == pytest.approx(0.5)


def test_ranks_ensemble_and_kendall_tau_match_pandas():
    assert score.ranks([3, 1, 3, 2]) == [3.5, 1, 3.5, 2]
    assert score.rank_ensemble([1, 2, 3], [3, 2, 1]) == [2, 2, 2]
    assert score.rank_ensemble([10, 20, 30], [1, 3, 2]) == [1, 2.5, 2.5]
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.randint(0, 5) for _ in range(12)]  # ties on both sides
        y = [rng.randint(0, 5) for _ in range(12)]
        expected = pd.DataFrame({"x": x, "y": y}).corr(method="kendall").iloc[0, 1]
        assert score.kendall_tau(x, y) == pytest.approx(expected)


def test_fidelity_has_a_bootstrap_interval_around_tau():
    truth = list(range(20))
    perfect = score.fidelity(truth, truth)
    assert (perfect.tau, perfect.low, perfect.high) == (1.0, 1.0, 1.0) and perfect.n == 20
    rng = random.Random(1)
    noisy = [t + rng.gauss(0, 6) for t in truth]
    f = score.fidelity(noisy, truth)
    assert f.low < f.tau < f.high and 0 < f.tau < 1
    assert f.high - f.low > 0.1  # 20 nets: the interval is wide, which is the point of showing it
    assert score.fidelity(noisy, truth, level=0.5).high - score.fidelity(noisy, truth, level=0.5).low < f.high - f.low
    assert str(f).startswith(f"{f.tau:.3f} [")


def small(block: str, width: int = 8, **kw) -> ArchSpec:
    return ArchSpec(blocks=(1, 1), channels=(width, 2 * width), stem_channels=width, block=block,
                    image_size=16, **kw)  # fmt: skip


@pytest.mark.parametrize("block", list(BLOCKS))
def test_init_scores_are_finite_for_every_block(block):
    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    got = score.init_scores(small(block, se=4), images, labels)
    assert set(got) == set(score.INIT_SCORES) and all(math.isfinite(v) for v in got.values()), got
    assert got["snip"] > 0
    assert score.init_scores(small(block, se=4), images, labels) == got  # seeded: the same net, the same scores


def test_init_scores_see_what_they_claim_to():
    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    narrow, wide = (score.init_scores(small("basic", w), images, labels) for w in (8, 32))
    assert wide["synflow"] > narrow["synflow"]  # more paths through more weights
    assert wide["naswot"] > narrow["naswot"]  # more units split the batch more finely
    same = images[:1].expand(16, -1, -1, -1)  # identical images share every code: a singular kernel
    assert score.naswot(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 64), torch.nn.ReLU()), same) == -math.inf
