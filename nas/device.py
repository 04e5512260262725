"""What each device gets: an indexed name, a memory layout, a precision, backend settings, a share of
CPU threads and a memory check. One place for every per-device choice, so training, evaluation,
prediction and the search workers cannot disagree, and each choice is testable on a CPU (the CUDA
queries are plain functions a test can replace).

Device strings are normalised here, at the edge: `cuda` becomes `cuda:<current>` because
`torch.cuda.set_device` and per-device queries refuse a CUDA device without an index.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Iterable, Iterator

import torch

from nas.errors import NasError
from nas.recipe import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs with native bf16 tensor cores
DATA_SHARE = 0.75  # at most this share of a worker's free GPU memory for its data; the rest: model, activations


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
    torch 2.14.1's oneDNN backward crashes (SIGSEGV) on channels_last within 50 steps, which decides
    it whatever the speed; benchmarks/cpu_layout.py compares the layouts for when that is fixed (its
    one run so far, on a heavily loaded VM, is inconclusive: benchmarks/RESULTS.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# --------------------------------------------------------------------------------------- precision


def choose_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: `auto` is bf16 on GPUs with native bf16 (compute capability 8.0
    and later: A100, H100, L4, RTX 30xx+), fp16 with a gradient scaler on older ones (T4, V100,
    P100); on the CPU bf16 where it is native (`cpu_bf16`: 1.5-2.2x fp32 on an EPYC with
    AVX512-BF16), else fp32 (emulated bf16 is 14x slower; benchmarks/RESULTS.md).
    An explicit bf16 on a GPU without native bf16 is refused: it would run emulated, slowly."""
    if requested not in PRECISIONS:
        raise NasError(f"unknown precision {requested!r}; use {', '.join(PRECISIONS)}.")
    if device.type != "cuda":
        return ("bf16" if cpu_bf16() else "fp32") if requested == "auto" else requested
    capability = tuple(torch.cuda.get_device_capability(device))
    native_bf16 = capability >= BF16_CAPABILITY
    if requested == "auto":
        return "bf16" if native_bf16 else "fp16"
    if requested == "bf16" and not native_bf16:
        raise NasError(f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}) "
                         f"has no native bf16; use --precision fp16 (what auto picks here) or fp32.")  # fmt: skip
    return requested


def cpu_bf16() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN with AVX512-BF16 or AMX). On this project's 2-core
    AMD EPYC (avx512_bf16), bf16 autocast trains ResNet-8 1.8x as fast as fp32; equal accuracy after
    2 epochs, 0.9 points lower after 10 (2 seeds; benchmarks/RESULTS.md, 2026-11-25)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def configure(device: torch.device, precision: str, deterministic: bool = False) -> None:
    """Process-wide backend settings for a run. fp32 means fp32: no TF32 in matmuls or convolutions
    (with autocast, TF32 only touches the few ops autocast leaves in fp32). `deterministic` trades
    cuDNN autotuning and the fastest (atomic-add) kernels for bit-identical results, which is what
    makes a resumed GPU run equal an uninterrupted one; an op with no deterministic kernel then
    raises instead of silently differing."""
    if device.type == "cuda":
        # The allow_tf32 flags, in every torch: they set the per-backend fp32_precision too, so that every getter
        # (allow_tf32, get_float32_matmul_precision, fp32_precision) still reads for third-party code and
        # Inductor; the fp32_precision setters make the older getters raise (tests/test_device.py).
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        if deterministic:  # cuBLAS is deterministic only with a fixed workspace (read when it is first used)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


# ----------------------------------------------------------------------------------------- memory


def use_expandable_segments() -> None:
    """Ask the CUDA caching allocator for expandable segments, unless the user configured it: with
    several jobs on one GPU and trials of every size, fixed segments fragment, and a large candidate
    could fail for want of a contiguous block while enough memory is free; that would bias the
    search against large nets. Read when CUDA is first used, and inherited by spawned workers."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def free_bytes(device: torch.device) -> int:
    """Free memory of a GPU, all processes counted. Through NVML where nvidia-ml-py is installed:
    unlike cudaMemGetInfo it needs no CUDA context, so the search's parent process can check every
    GPU without taking memory on it for the whole search."""
    try:
        return torch.cuda.get_device_properties(device).total_memory - torch.cuda.device_memory_used(device)
    except Exception:  # no nvidia-ml-py, or NVML cannot reach a driver (pynvml.NVMLError)
        return torch.cuda.mem_get_info(device)[0]


def check_fits(need: int, device: torch.device, what: str, jobs: int = 1) -> None:
    """Refuse, in one line, data that `jobs` workers on `device` cannot hold with room to train."""
    if device.type != "cuda":
        return  # host memory: the images are already in it
    free = free_bytes(device)
    if need * jobs > DATA_SHARE * free:
        each = f" per worker, {jobs} workers" if jobs > 1 else ""
        raise NasError(
            f"{what} needs {size(need)} of GPU memory{each}; {device} has {size(free)} free, and at most "
            f"{DATA_SHARE:.0%} of it may hold data (the rest is for the model). Use a smaller --image-size"
            f"{', fewer --jobs-per-gpu' if jobs > 1 else ''} or a GPU with more memory."
        )


def size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def is_out_of_memory(e: BaseException) -> bool:
    """An out-of-memory error, however it surfaces: the caching allocator raises OutOfMemoryError,
    but cuDNN and cuBLAS report a failed allocation of their own as a plain RuntimeError
    (`CUDNN_STATUS_ALLOC_FAILED`, `CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate`,
    `CUDA error: out of memory`)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower() or "_ALLOC_FAILED" in text)


def release_memory(device: torch.device | str) -> None:
    """Give a GPU's cached free blocks back to the driver, for a neighbouring job or the next trial.
    gc first: a reference cycle (the lazy torch._dynamo import leaves one around the first fit of a
    process, an exception's traceback another) can pin a finished run's tensors until collected."""
    if torch.device(device).type != "cuda":
        return
    gc.collect()
    torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- CPU


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask: a container's or a scheduler's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Each of `workers` processes on this machine gets an equal share of the cores for its
    intra-op threads; torch's default (all cores in every process) oversubscribes them."""
    return max(1, cpu_cores() // max(1, workers))


# -------------------------------------------------------------------------------------- CPU threads

PROBE_STEPS = 3  # timed training steps per candidate thread count, after one untimed step
GIVE_UP = 2.0  # a candidate whose step takes this many times the best median so far is dropped at once


class CpuThreads:
    """The intra-op thread count of a CPU run, chosen by timing its first training steps with one
    thread, two, four, ... up to `most`, and keeping the fastest (median step time).

    On a machine whose cores other jobs share, fewer threads can be many times faster: OpenMP's and
    oneDNN's spin-waiting threads burn the time slices their partners need to reach the next
    barrier (one thread was 4-9x faster than two on a loaded 2-core VM, benchmarks/RESULTS.md), so
    a candidate that slow is dropped after one timed step. The probe's steps are real training
    steps; only the choice depends on the load. The thread count changes float rounding, so two
    runs are bit-identical only with the count pinned (`for_run(n)`, or OMP_NUM_THREADS set); a
    resumed run pins the count its first part recorded.
    """

    def __init__(self, most: int, chosen: int | None = None, clock=time.perf_counter):
        self.most, self.clock = most, clock
        candidates = sorted({max(1, most >> k) for k in range(most.bit_length())})
        self.queue = [] if chosen or len(candidates) == 1 else candidates  # still to try, the current one first
        self.times: dict[int, list[float]] = {n: [] for n in candidates}
        self.steps = 0  # of the current candidate
        self.count = chosen or most

    @classmethod
    def for_run(cls, pinned: int | None = None) -> CpuThreads:
        """Up to torch's current thread count; `pinned`, or OMP_NUM_THREADS in the environment (the
        user chose), fixes the count instead of probing."""
        most = torch.get_num_threads()
        return cls(most, pinned or (most if os.environ.get("OMP_NUM_THREADS") else None))

    def pace(self, batches: Iterable) -> Iterator:
        """Yields what `batches` does, each item under the thread count its step runs with; while the
        probe lasts, times the step the caller runs between two items (making a batch is not a step)."""
        for item in batches:
            n = self.queue[0] if self.queue else self.count
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            t0 = self.clock()
            yield item
            if self.queue:
                self._timed(n, self.clock() - t0)

    def _timed(self, n: int, seconds: float) -> None:
        self.steps += 1
        if self.steps == 1:  # a candidate's first step warms it up
            return
        self.times[n].append(seconds)
        medians = {k: statistics.median(t) for k, t in self.times.items() if t}
        best = min(m for k, m in medians.items() if k != n) if len(medians) > 1 else math.inf
        if len(self.times[n]) == PROBE_STEPS or seconds > GIVE_UP * best:
            self.queue.pop(0)
            self.steps = 0
            if not self.queue:
                self.count = min(medians, key=medians.get)

    def restore(self) -> None:
        """Give the process back the thread count it had before the run."""
        torch.set_num_threads(self.most)
