"""What a proxy run is turned into: the scores that rank trials, and how well a score ranks.

Every score is "higher is better". Three kinds, by what each needs:

- from a proxy training's history (`nas.train.fit`'s rows: `train_loss`, `val_acc` per epoch):
    val_acc       the last epoch's validation accuracy (the search's objective so far);
    tse           training speed estimation (Ru et al. 2021, "Speedy performance estimation for
                  neural architecture search"): minus the sum over the epochs of the mean training
                  loss, so a net that learns fast from the first epoch on scores high;
    extrapolated  learning-curve extrapolation: the validation error's power law in the epoch
                  (log err = a + b log epoch, least squares over the curve) read at `horizon` epochs;
- at initialisation, no training ("zero-cost", Abdelfattah et al. 2021), on one batch:
    synflow       Tanaka et al. 2020: sum of |w * dR/dw| where R is the output of the net with
                  absolute weights on an all-ones input, in float64 (log10 of it: the raw figure
                  spans hundreds of orders of magnitude across depths);
    snip          Lee et al. 2019: sum of |w * dL/dw| of the cross-entropy on a real batch;
    naswot        Mellor et al. 2021 (jacov's successor): log-determinant of the Hamming-similarity
                  kernel of the images' binary ReLU codes: nets whose units split the batch finely;
- from the spec alone:
    params        the parameter count (the baseline the literature finds hard to beat).

`rank_ensemble` averages ranks of several scores over a set of nets; `fidelity` measures a score
against ground truth (retrain accuracy): Kendall tau with a bootstrap interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HISTORY_SCORES = ("val_acc", "tse", "extrapolated")  # what `nas search --score` can make its objective
DESCRIPTIONS = {"val_acc": "the proxy training's last validation accuracy",
                "tse": "training speed: minus the proxy's summed epoch losses",
                "extrapolated": "the validation curve's power law read at the retrain's length"}  # fmt: skip
INIT_SCORES = ("synflow", "snip", "naswot")


# ------------------------------------------------------------------------------ from a proxy's history


def metric_name(score: str) -> str:
    """The objective's name in the study, the dashboard and the report: proxy_val_acc, proxy_tse, ..."""
    return f"proxy_{score}"


def label(score: str) -> str:
    """The score's word on a trial's progress line: 'val' for the validation accuracy, else its name."""
    return "val" if score == "val_acc" else score


def is_accuracy(score: str) -> bool:
    """Whether the score reads as an accuracy (0-1, beside a retrain's) or is a scale of its own (tse)."""
    return score != "tse"


def horizon(retrain_epochs: int, proxy_subset: float) -> float:
    """Where `extrapolated` reads a proxy's curve: the retrain's length in proxy epochs (a proxy
    epoch sees `proxy_subset` of the training split)."""
    return retrain_epochs / proxy_subset


def of_history(score: str, history: Sequence[dict[str, float]], horizon: float = 30) -> float:
    """`score` (one of HISTORY_SCORES) of a proxy training's rows so far: the search's objective
    after the last epoch, and the pruner's signal after each."""
    if score == "val_acc":
        return val_acc(history)
    if score == "tse":
        return tse(history)
    if score == "extrapolated":
        return extrapolated(history, horizon)
    raise ValueError(f"unknown score {score!r}; known: {', '.join(HISTORY_SCORES)}")


def val_acc(history: Sequence[dict[str, float]]) -> float:
    return history[-1]["val_acc"]


def tse(history: Sequence[dict[str, float]]) -> float:
    """Minus the sum of the epochs' mean training losses (TSE, Ru et al. 2021; their TSE-E over the
    last E epochs is this over a shorter history)."""
    return -sum(row["train_loss"] for row in history)


def extrapolated(history: Sequence[dict[str, float]], horizon: float = 30) -> float:
    """The accuracy the validation curve's power law reaches at `horizon` epochs: log(1 - acc) fitted
    linearly in log(epoch) over the epochs scored. One point cannot fix a slope: then the last value."""
    points = [(math.log(row["epoch"]), math.log(max(1.0 - row["val_acc"], 1e-6)))
              for row in history if not math.isnan(row["val_acc"])]  # fmt: skip
    if len(points) < 2:
        return history[-1]["val_acc"]
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    slope = min(slope, 0.0)  # an error that grows is not extrapolated upward
    return 1.0 - math.exp(my + slope * (math.log(horizon) - mx))


# -------------------------------------------------------------------------------- at initialisation


def init_scores(spec: Any, images: Any, labels: Any, seed: int = 0) -> dict[str, float]:
    """synflow, snip and naswot of `spec`'s network as `build_model` initialises it with `seed`, on a
    batch of `images` (float, normalised, NCHW) and their `labels`, on the CPU."""
    import torch

    from nas.model import build_model

    def fresh():
        torch.manual_seed(seed)
        return build_model(spec)

    return {"synflow": synflow(fresh(), images.shape[1:]), "snip": snip(fresh(), images, labels),
            "naswot": naswot(fresh(), images)}  # fmt: skip


def synflow(model: Any, shape: Sequence[int]) -> float:
    import torch

    model = model.double().eval()  # eval: BatchNorm's running statistics at init are the identity
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    out = model(torch.ones(1, *shape, dtype=torch.float64))
    out.sum().backward()
    total = sum((p * p.grad).abs().sum().item() for p in model.parameters() if p.grad is not None)
    return math.log10(total) if total > 0 else -math.inf


def snip(model: Any, images: Any, labels: Any) -> float:
    import torch.nn.functional as F

    model.train()
    F.cross_entropy(model(images), labels).backward()
    return sum((p * p.grad).abs().sum().item() for p in model.parameters() if p.grad is not None and p.ndim > 1)


def naswot(model: Any, images: Any) -> float:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    relus = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default, torch.ops.aten.hardtanh.default,
             torch.ops.aten.hardtanh_.default}  # fmt: skip
    codes: list[torch.Tensor] = []

    class Codes(TorchDispatchMode):  # the blocks call F.relu: no module to hook, so watch the ops
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in relus and out.ndim >= 2 and out.shape[0] == len(images):
                codes.append((out.detach() > 0).flatten(1).double())
            return out

    model.eval()
    with torch.no_grad(), Codes():
        model(images)
    c = torch.cat(codes, 1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T  # units on which two images agree
    sign, logdet = torch.linalg.slogdet(kernel)
    return logdet.item() if sign > 0 else -math.inf


# ---------------------------------------------------------------------------------- over many nets


def ranks(values: Sequence[float]) -> list[float]:
    """1 for the lowest, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def rank_ensemble(*scores: Sequence[float]) -> list[float]:
    """Each net's mean rank under several scores (of one set of nets): a score's scale does not count."""
    columns = [ranks(s) for s in scores]
    return [sum(col[i] for col in columns) / len(columns) for i in range(len(columns[0]))]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected for, as pandas and scipy compute it)."""
    concordant = discordant = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + tx) * (concordant + discordant + ty))
    return (concordant - discordant) / denominator if denominator else math.nan


@dataclass(frozen=True)
class Fidelity:
    n: int
    tau: float
    low: float  # the bootstrap interval's ends
    high: float

    def __str__(self) -> str:
        return f"{self.tau:.3f} [{self.low:.2f}, {self.high:.2f}]"


def fidelity(score: Sequence[float], truth: Sequence[float], *, level: float = 0.9, resamples: int = 2000,
             seed: int = 0, stat: Callable[[Sequence[float], Sequence[float]], float] = kendall_tau) -> Fidelity:  # fmt: skip
    """Kendall tau of `score` against `truth` with a percentile bootstrap interval at `level`:
    nets drawn with replacement, `resamples` times (draws where tau is undefined, all ties, skipped)."""
    n = len(score)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        t = stat([score[i] for i in pick], [truth[i] for i in pick])
        if not math.isnan(t):
            draws.append(t)
    draws.sort()
    if not draws:
        return Fidelity(n, stat(score, truth), math.nan, math.nan)
    cut = (1 - level) / 2
    at = lambda q: draws[min(len(draws) - 1, int(q * len(draws)))]  # noqa: E731
    return Fidelity(n, stat(score, truth), at(cut), at(1 - cut))
