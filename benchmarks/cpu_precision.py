"""Which precision `auto` should pick on the CPU: the time of one training step (forward, backward,
SGD update) of the same net and batch in fp32, bf16 and fp16 autocast, as `fit` runs it.

    PYTHONPATH=. python benchmarks/cpu_precision.py [--batch 128] [--rounds 5] [--steps 5]

The precisions take turns for `--rounds` rounds; the fastest step of each is reported (the least
disturbed by other processes: on a shared machine the median says more about the neighbours).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nas.arch import ArchSpec
from nas.model import build_model
from nas.device import DTYPES


def step_seconds(model, optimizer, x, y, precision: str, steps: int) -> float:
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=DTYPES[precision], enabled=precision != "fp32"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    args = p.parse_args()
    torch.manual_seed(0)
    spec = ArchSpec(blocks=[1, 1, 1], channels=[32, 64, 128])
    model = build_model(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    precisions = args.precisions.split(",")
    best = {p: float("inf") for p in precisions}
    for p in precisions:
        step_seconds(model, optimizer, x, y, p, 2)  # warm-up: oneDNN primitives for each dtype
    for _ in range(args.rounds):
        for p in precisions:
            best[p] = min(best[p], step_seconds(model, optimizer, x, y, p, args.steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {spec.describe()}, batch {args.batch}")
    for p in precisions:
        print(f"{p}: {best[p] * 1000:.0f} ms per training step ({best['fp32'] / best[p]:.2f}x fp32)")


if __name__ == "__main__":
    main()
