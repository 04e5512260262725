"""Batched augmentation on the device, and the iterator that feeds `fit`.

The permuted training split is augmented in chunks of about CHUNK_BYTES of float32 images
(CPU_CHUNK_BYTES on the CPU), each in a few large tensor ops (crop with padding, flip, rotation,
normalisation, cutout) stored in the compute dtype; batches are contiguous slices of a chunk, so
the inner loop launches no augmentation kernels beyond mixup or cutmix, moves nothing between host
and device, and never waits for the CPU: every op here is asynchronous on CUDA (no boolean masks,
whose `nonzero` reads a count back to the host, and no tensors built from Python lists, which are
host-to-device copies; tests/test_augment.py checks the ops of a whole epoch).

Randomness: per-image draws come from one `torch.Generator` on the device; per-batch scalars (the
mixup/cutmix lambda and box) from a Python `random.Random`. Both are saved in checkpoints, so a
resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from nas.recipe import Recipe

# Float32 bytes of the images augmented at once: 8,192 CIFAR images (32 px), 512 at 128 px, 167 at
# 224 px; at least one batch. Augmenting a chunk holds up to WORKSPACE_CHUNKS times this at its peak:
# the previous chunk (its batches are still being trained on), the uint8 gather, the float copy, the
# padded copy (1.56 chunks at 32 px padded by 4) and the crop; measured 4.1 chunks at 224 px
# (tests/test_data.py).
CHUNK_BYTES = 96 * 2**20
WORKSPACE_CHUNKS = 5
# On the CPU: cache-sized chunks (640 CIFAR images) augment an epoch in 1.5 CPU-s instead of 3.7 (8,192
# images) and peak ~320 MB lower (benchmarks/RESULTS.md, 2026-11-25).
CPU_CHUNK_BYTES = 8 * 2**20


def chunk_images(image_shape: tuple[int, ...], batch_size: int, cpu: bool = False) -> int:
    """Images per augmented chunk: whole batches, about CHUNK_BYTES of float32 (CPU_CHUNK_BYTES on
    the CPU), at least one batch."""
    per_batch = 4 * math.prod(image_shape) * batch_size
    return max(1, (CPU_CHUNK_BYTES if cpu else CHUNK_BYTES) // per_batch) * batch_size


def workspace_bytes(image_shape: tuple[int, ...], batch_size: int, images: int) -> int:
    """Peak device memory of augmenting a chunk of a training set of `images`, beyond the uint8 images."""
    chunk = min(chunk_images(image_shape, batch_size), max(images, batch_size))
    return WORKSPACE_CHUNKS * 4 * math.prod(image_shape) * chunk


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """Pad by `padding` (reflect, or zeros: black) and cut a random window of the original size
    from each image: one gather with broadcast integer indices (n x 1 x h x 1 rows, n x 1 x 1 x w
    columns), so no index as large as the images is ever built and the host never waits."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect" if mode == "reflect" else "constant")
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=g)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    images = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[images, channels, rows, cols]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), 1, 1, 1, device=x.device, generator=g) < 0.5
    return torch.where(flip, x.flip(3), x)


def random_rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] (bilinear, edges reflected)."""
    angle = (torch.rand(len(x), device=x.device, generator=g) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def cutout(x: torch.Tensor, size: int, holes: int, g: torch.Generator) -> torch.Tensor:
    """Zero `holes` squares of side `size` per image, centred anywhere (they may overhang the edge,
    as in DeVries & Taylor 2017). On normalised images zero is the mean colour."""
    n, _, h, w = x.shape
    keep = torch.ones(n, 1, h, w, dtype=torch.bool, device=x.device)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    for _ in range(holes):
        cy = torch.randint(0, h, (n, 1), device=x.device, generator=g) - size // 2
        cx = torch.randint(0, w, (n, 1), device=x.device, generator=g) - size // 2
        in_rows = (rows >= cy) & (rows < cy + size)
        in_cols = (cols >= cx) & (cols < cx + size)
        keep &= ~(in_rows[:, None, :, None] & in_cols[:, None, None, :])
    return x * keep


def mixup(x: torch.Tensor, t: torch.Tensor, lam: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each image and its soft target with a random partner from the batch."""
    perm = torch.randperm(len(x), device=x.device, generator=g)
    return x * lam + x[perm] * (1 - lam), t * lam + t[perm] * (1 - lam)


def cutmix(x: torch.Tensor, t: torch.Tensor, lam: float, rng: random.Random, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of area about (1 - lam) from a random partner; targets mix by the box's true area."""
    n, _, h, w = x.shape
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = rng.randrange(h), rng.randrange(w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    perm = torch.randperm(n, device=x.device, generator=g)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0) / (h * w)
    return x, t * (1 - area) + t[perm] * area


class Normalize:
    """uint8 (or float in [0, 255]) -> float, zero mean and unit variance per channel. The
    constants go to the device once, here, not on every chunk (each would be a host-to-device copy)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def prepare(x: torch.Tensor, normalize: Normalize, dtype: torch.dtype, layout: torch.memory_format) -> torch.Tensor:
    """Normalised evaluation images in the compute dtype and the device's layout, written chunk by chunk
    into one tensor allocated up front: the peak is the result plus a chunk's float workspace (joining
    converted chunks held the chunks, their concatenation and its layout copy at once: 3 times the result)."""
    out = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=layout)
    step = chunk_images(x.shape[1:], 1, cpu=x.device.type == "cpu")
    for i in range(0, len(x), step):
        out[i : i + step] = normalize(x[i : i + step])
    return out


class TrainBatches:
    """Yields (images, targets) for one epoch per call. Targets are class indices, or soft targets
    (N x classes, rows summing to 1) when mixup or cutmix is on."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, mean, std, classes: int,
                 dtype: torch.dtype, seed: int, layout: torch.memory_format = torch.contiguous_format):  # fmt: skip
        self.x, self.y, self.recipe, self.layout, self.dtype = x, y, recipe, layout, dtype
        self.normalize = Normalize(mean, std, x.device)
        self.one_hot = torch.eye(classes, device=x.device)  # rows are soft targets: F.one_hot checks its input on the host
        self.g = torch.Generator(device=x.device).manual_seed(seed)
        self.rng = random.Random(seed)
        self.batch_size = min(recipe.batch_size, len(x))
        self.steps = len(x) // self.batch_size  # the remainder is dropped: every step has one shape
        self.chunk = chunk_images(x.shape[1:], self.batch_size, cpu=x.device.type == "cpu")

    def __len__(self) -> int:
        return self.steps

    def state_dict(self) -> dict:
        return {"g": self.g.get_state(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict, device_generator_seed: int | None = None) -> None:
        """`device_generator_seed`: the state comes from another device type, whose generator state
        this one cannot take; seed it instead (the per-batch Python draws still carry over)."""
        if device_generator_seed is None:
            self.g.set_state(state["g"])
        else:
            self.g.manual_seed(device_generator_seed)
        self.rng.setstate(state["rng"])

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        x = x.float()
        if r.crop_padding:
            x = random_crop(x, r.crop_padding, self.g, r.pad_mode)
        if r.flip:
            x = random_flip(x, self.g)
        if r.rotation:
            x = random_rotate(x, r.rotation, self.g)
        x = self.normalize(x)
        if r.cutout:
            x = cutout(x, r.cutout, r.cutout_holes, self.g)
        return x.to(self.dtype)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        perm = torch.randperm(len(self.x), device=self.x.device, generator=self.g)[: self.steps * bs]
        for start in range(0, len(perm), self.chunk):
            idx = perm[start : start + self.chunk]
            images = self.augment(self.x[idx]).contiguous(memory_format=self.layout)
            yield from self._batches(images, self.y[idx])

    def _batches(self, images: torch.Tensor, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        r, bs = self.recipe, self.batch_size
        for i in range(len(images) // bs):
            x, t = images[i * bs : (i + 1) * bs], labels[i * bs : (i + 1) * bs]
            if r.mixup or r.cutmix:
                t = self.one_hot[t]  # targets stay fp32: rows sum to 1 exactly
                use_cutmix = r.cutmix and (not r.mixup or self.rng.random() < 0.5)
                alpha = r.cutmix if use_cutmix else r.mixup
                lam = self.rng.betavariate(alpha, alpha)
                x, t = cutmix(x, t, lam, self.rng, self.g) if use_cutmix else mixup(x, t, lam, self.g)
            yield x, t
