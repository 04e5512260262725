"""What each device gets: an indexed name, a memory layout. One place for every per-device choice,
so training, evaluation and prediction cannot disagree.

Device strings are normalised here, at the edge: `cuda` becomes `cuda:<current>` because
`torch.cuda.set_device` and per-device queries refuse a CUDA device without an index.
"""

from __future__ import annotations

import torch

from nas.errors import NasError


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """`name` as an indexed torch.device; None picks the current GPU when there is one, else the CPU."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise NasError(f"unknown device {name!r}; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NasError(f"device {name}: no CUDA device is visible here; use cpu.")
        index = torch.cuda.current_device() if device.index is None else device.index
        if not 0 <= index < torch.cuda.device_count():
            raise NasError(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s).")
        device = torch.device("cuda", index)
    return device


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor-core convolutions want NHWC). Contiguous (NCHW) on the CPU:
    torch 2.14.1's oneDNN backward crashes (SIGSEGV) on channels_last, and measured on this
    project's CPUs NCHW is not slower (benchmarks/cpu_layout.py, benchmarks/RESULTS.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
