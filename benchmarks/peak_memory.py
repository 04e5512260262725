"""The closed-form peak activation memory (`nas.count.count_peak_memory`) against a measurement: a
liveness walk over each network's torch.fx graph (`nas.export.graph_peak_memory`), on random specs
of every registered block covering every option (the generator of tests/test_count.py). Exits 1 on
any difference. tests/test_peak_memory.py runs the same check on fewer specs.

    python benchmarks/peak_memory.py [--per-block 150] [--record benchmarks/RESULTS.md]
"""

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_count import random_spec  # noqa: E402

from nas.bench import append_record  # noqa: E402
from nas.blocks import BLOCKS  # noqa: E402
from nas.count import count_peak_memory  # noqa: E402
from nas.export import graph_peak_memory  # noqa: E402
from nas.model import build_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-block", type=int, default=150)
    p.add_argument("--record", type=Path, help="append the results to this Markdown file")
    args = p.parse_args()
    rows, wrong = [], 0
    for block in BLOCKS:
        t0, peaks, differ = time.perf_counter(), [], []
        for seed in range(args.per_block):
            spec = random_spec(random.Random(seed), block)
            closed, walked = count_peak_memory(spec), graph_peak_memory(build_model(spec), spec)
            peaks.append(closed)
            if closed != walked:
                differ.append(f"seed {seed} ({spec.describe()}): {closed:,} vs {walked:,}")
        wrong += len(differ)
        line = (f"{args.per_block - len(differ)}/{args.per_block} equal; peaks {min(peaks):,}-{max(peaks):,} bytes "
                f"in int8; {time.perf_counter() - t0:.0f} s")  # fmt: skip
        print(f"{block:<11} {line}", *differ, sep="\n  ")
        rows.append((block, line + "".join(f"; differs at {d}" for d in differ)))
    if args.record:
        append_record(args.record, "CPU (AMD EPYC, 2 cores, shared)", "python " + " ".join(sys.argv), rows)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
