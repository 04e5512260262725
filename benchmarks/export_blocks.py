"""ONNX export of every block family on random specs (tests/test_count.py's generator, at the
dataset's image shape): onnxruntime's logits and top-1 against torch's on real images. The weights
are random with BatchNorm statistics made non-trivial (no training needed to test the graph), the
images the dataset's first test images. Exits 1 on any disagreement.

    python benchmarks/export_blocks.py --dataset imagefolder:/tmp/c10/cifar10-jpeg [--per-block 10] [--images 1000]
"""

import argparse
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_count import random_spec  # noqa: E402
from test_export import trained_looking  # noqa: E402

from nas.arch import ArchSpec  # noqa: E402
from nas.bench import append_record  # noqa: E402
from nas.blocks import BLOCKS  # noqa: E402
from nas.data import channel_stats, load_dataset  # noqa: E402
from nas.errors import NasError  # noqa: E402
from nas.export import LOGIT_TOLERANCE, Deployable, onnx_logits, torch_logits, write_onnx  # noqa: E402


def at_shape(spec: ArchSpec, shape: dict[str, int]) -> ArchSpec:
    """The spec for the dataset's images; with a global pool where its own no longer divides the map."""
    try:
        return ArchSpec.from_dict({**spec.to_dict(), **shape})
    except NasError:
        return ArchSpec.from_dict({**replace(spec, pool="global").to_dict(), **shape})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic:1000")
    p.add_argument("--data-dir")
    p.add_argument("--per-block", type=int, default=10)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--record", type=Path, help="append the results to this Markdown file")
    args = p.parse_args()
    data = load_dataset(args.dataset, args.data_dir)
    images = data.test_x[: args.images]
    mean, std = channel_stats(data.train_x)
    rows, wrong = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for block in BLOCKS:
            t0, worst, differ, pools, se = time.perf_counter(), 0.0, 0, set(), set()
            for seed in range(args.per_block):
                spec = at_shape(random_spec(random.Random(seed), block), data.shape)
                module = Deployable(trained_looking(spec), mean, std)
                write_onnx(module, spec, Path(tmp) / "m.onnx")
                got, want = onnx_logits(Path(tmp) / "m.onnx", images), torch_logits(module, images)
                worst = max(worst, float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max())))
                differ += int((got.argmax(1) != want.argmax(1)).sum())
                pools.add(str(spec.pool))
                se.add(bool(spec.se))
            bad = differ > 0 or worst > LOGIT_TOLERANCE
            wrong += bad
            line = (f"{args.per_block} specs (pools {', '.join(sorted(pools))}; SE {'on and off' if len(se) > 1 else se.pop()}): "
                    f"top-1 differs on {differ} of {args.per_block * len(images):,} predictions; largest logit difference "
                    f"{worst:.1e} of the largest logit; {time.perf_counter() - t0:.0f} s")  # fmt: skip
            print(f"{block:<11} {line}")
            rows.append((block, line))
    if args.record:
        append_record(args.record, "CPU (AMD EPYC, 2 cores, shared)", "python " + " ".join(sys.argv), rows)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
