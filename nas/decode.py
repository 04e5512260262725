"""Image files to uint8 arrays, in worker processes: Pillow holds the GIL for most of the ~150 µs a
small JPEG costs (opening, header parsing, mode conversion), so threads decode no faster than one
core. Processes do. On Linux they are forked, as torch's DataLoader forks its workers: they start
in milliseconds and do not re-run the caller's script; elsewhere they are spawned, and this module
imports neither torch nor the rest of nas (but the torch-free nas.errors) so that they start fast (torch only where an image must
be resized).
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from nas.errors import NasError  # torch-free, like this module

PER_PROCESS = 2000  # fewer images than this per process: starting it costs more than it saves


def decode(paths: list[str], image_size: int | None, processes: int) -> np.ndarray:
    """uint8 N x 3 x H x W from image files (resized to image_size x image_size where given), in
    up to `processes` spawned processes. A file that is not an image, or images of different sizes
    without `image_size`, raise NasError with one clear sentence."""
    processes = max(1, min(processes, len(paths) // PER_PROCESS))
    if processes == 1:
        return decode_files(paths, image_size)
    import multiprocessing

    step = -(-len(paths) // (4 * processes))  # four parts per process: a slow part delays the end less
    parts = [paths[i : i + step] for i in range(0, len(paths), step)]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_one_thread) as pool:
        arrays = list(pool.map(decode_files, parts, [image_size] * len(parts)))
    _check_same_size([a.shape[1:] for a in arrays])
    return np.concatenate(arrays)


def decode_files(paths: list[str], image_size: int | None) -> np.ndarray:
    """uint8 N x 3 x H x W from `paths`, in this process."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                img = np.asarray(im if im.mode == "RGB" else im.convert("RGB")).transpose(2, 0, 1)  # to 3 x H x W
        except (OSError, UnidentifiedImageError) as e:
            raise NasError(f"cannot decode image {p}: {e}") from None
        if image_size and img.shape[1:] != (image_size, image_size):
            img = resize(img[None], image_size)[0]
        images.append(img)
    _check_same_size([i.shape for i in images])
    return np.stack(images) if images else np.zeros((0, 3, image_size or 0, image_size or 0), np.uint8)


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """uint8 N x C x H x W images resized to size x size (bilinear, antialiased when shrinking)."""
    import torch

    out = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(x)).float(), size=(size, size),
                                          mode="bilinear", antialias=True)  # fmt: skip
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def _one_thread() -> None:
    """A decoder is one process per core already; a forked one must also not use the intra-op thread
    pool it inherited from its parent (what torch's DataLoader workers do too)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _check_same_size(shapes: list[tuple[int, ...]]) -> None:
    distinct = sorted(set(shapes))
    if len(distinct) > 1:
        a, b = distinct[:2]
        raise NasError(f"images differ in size ({a[1]}x{a[2]} and {b[1]}x{b[2]}); pass --image-size N to resize them.")

