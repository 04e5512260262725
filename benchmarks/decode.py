"""First decode of an image folder: Pillow in threads (what nas did before), Pillow in one process,
and nas.decode (Pillow in one process per core), taking turns.

    PYTHONPATH=. python benchmarks/decode.py /tmp/cifar10-jpeg [--rounds 3]

Prints each way's fastest and median wall time over the rounds for every image under the folder.
Threads cannot beat one process by much: Pillow holds the GIL for most of a small JPEG's decode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nas.decode import decode, decode_files
from nas.device import cpu_cores


def pillow_threads(paths: list[str]) -> np.ndarray:
    """The decoder nas had before: Pillow in a thread pool of min(16, cores) threads."""
    from PIL import Image

    def one(p: str) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(one, paths, chunksize=256)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    paths = sorted(str(f) for f in Path(args.folder).rglob("*.jpg"))
    ways = {
        f"Pillow, {min(16, os.cpu_count() or 1)} threads (before)": pillow_threads,
        "Pillow, 1 process": lambda ps: decode_files(ps, None),
        f"nas.decode, {cpu_cores()} processes": lambda ps: decode(ps, None, processes=cpu_cores()),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    reference = None
    for _ in range(args.rounds):
        for name, way in ways.items():
            t0 = time.perf_counter()
            out = way(paths)
            times[name].append(time.perf_counter() - t0)
            reference = out if reference is None else reference
            assert np.array_equal(out, reference), f"{name} decoded other pixels"
    print(f"{len(paths):,} images under {args.folder}, {os.cpu_count()} cores, {args.rounds} rounds")
    for name, ts in times.items():
        print(f"{name}: fastest {min(ts):.1f} s ({min(ts) / len(paths) * 1e6:.0f} µs/image), median {statistics.median(ts):.1f} s")


if __name__ == "__main__":
    main()
