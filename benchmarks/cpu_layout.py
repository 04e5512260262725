"""Which memory layout trains fastest on this CPU: NCHW (contiguous) or channels_last, with oneDNN
on and off. Each variant runs in its own process (channels_last with oneDNN crashes torch 2.14.1's
backward), the variants interleaved over rounds so machine load hits all alike; prints the median
steps/s of each and its ratio to NCHW. `nas.device.memory_format` states the choice.

    python benchmarks/cpu_layout.py [--rounds 3] [--steps 10] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = {"nchw": ("contiguous", True), "nhwc": ("channels_last", True),
            "nchw-no-onednn": ("contiguous", False), "nhwc-no-onednn": ("channels_last", False)}  # fmt: skip


def one(variant: str, steps: int, batch: int) -> float:
    import torch

    from nas.arch import ArchSpec
    from nas.model import build_model

    layout, onednn = VARIANTS[variant]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.backends.mkldnn.enabled = onednn
    torch.manual_seed(0)
    # MLPerf Tiny's ResNet-8 at CIFAR size: the network the CPU path exists for.
    model = build_model(ArchSpec(blocks=[1, 1, 1], channels=[16, 32, 64])).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--timeout", type=float, default=120, help="seconds a variant may take before it counts as stuck")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.steps, a.batch)))
        return
    import torch

    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    crashes: dict[str, int | str] = {}
    for _ in range(a.rounds):
        for v in VARIANTS:
            try:
                r = subprocess.run([sys.executable, __file__, "--one", v, "--steps", str(a.steps), "--batch", str(a.batch)],
                                   capture_output=True, text=True, timeout=a.timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                crashes[v] = f"over {a.timeout} s"
                continue
            if r.returncode:
                crashes[v] = r.returncode
            else:
                rates[v].append(json.loads(r.stdout))
    from nas.bench import cpu_model

    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, ResNet-8 batch {a.batch}")
    base = statistics.median(rates["nchw"]) if rates["nchw"] else None
    for v in VARIANTS:
        if v in crashes:
            print(f"{v:16} failed ({crashes[v] if isinstance(crashes[v], str) else f'exit {crashes[v]}'})")
        else:
            m = statistics.median(rates[v])
            print(f"{v:16} {m:7.2f} steps/s" + (f"  {m / base:.2f}x nchw" if base else ""))


if __name__ == "__main__":
    main()
