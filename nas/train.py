"""`fit`: train the model an ArchSpec describes with a Recipe on a Split, as fast as the device allows.

The data already lives on the device (`Split.to`); each epoch is augmented in bulk there
(`nas.augment`); the precision, memory layout and backend settings come from `nas.device` (bf16
autocast where the GPU has it natively, fp16 with a gradient scaler where it does not, channels_last,
cuDNN autotuning; on the CPU bf16 where native and the thread count a probe of the first steps picks);
fused/foreach optimizers on CUDA; one host-device sync per epoch, for the logged metrics (in fp16 one
more a step with an optimizer that has no fused kernel: `OptimInfo.fp16_syncs`). The learning
rate is a pure function of the step, so a run resumed from a checkpoint follows exactly the schedule
of an uninterrupted one; its results are bit-identical on the CPU (it keeps the thread count it
recorded), and on a GPU with `deterministic=True`.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec
from nas.augment import Normalize, TrainBatches, prepare
from nas.data import Split
from nas.device import DTYPES, CpuThreads, choose_precision, configure, is_out_of_memory, memory_format, resolve_device
from nas.errors import NasError
from nas.model import build_model
from nas.recipe import OPTIMIZERS, Recipe

CHECKPOINT_VERSION = 2  # 2 adds the device type, the precision and the gradient scaler's state
READABLE_CHECKPOINTS = (1, 2)
EVAL_BATCH = 1024
# Parameter-group settings that belong to the device, not to the run: make_optimizer chooses them, and a
# checkpoint from another device type must not carry them over (capturable=True on the CPU fails its
# first step; a CPU group loaded on CUDA would silently lose fused).
DEVICE_FLAGS = ("fused", "foreach", "capturable")
COMPILE_BACKEND = "inductor"  # torch.compile's; tests choose a cheap one
log = logging.getLogger("nas")


@dataclass
class FitResult:
    status: str  # "complete", "nan" (loss became NaN or infinite) or "oom" (out of device memory)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    model: nn.Module | None = None
    seconds: float = 0.0  # wall time of the whole call, setup included
    message: str = ""
    precision: str = ""  # what ran: bf16, fp16 or fp32

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "fp32")


def lr_factor(recipe: Recipe, t: float) -> float:
    """Multiplier of the peak learning rate `t` epochs into the run (t is fractional: per step)."""
    r, e = recipe, recipe.epochs
    if r.schedule == "constant":
        return 1.0
    if r.schedule == "step":
        return r.gamma ** math.floor(t / r.step_every)
    if r.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t / e, 1.0)))
    if r.schedule == "cosine-restarts":  # SGDR: a cosine per cycle, each peak restart_decay x the last
        cycle, within = divmod(t / r.restart_every, 1.0)
        return r.restart_decay**cycle * 0.5 * (1 + math.cos(math.pi * within))
    if r.schedule == "warmup-cosine":
        w = min(r.warmup_epochs, e)
        if t < w:
            return t / w
        return 0.5 * (1 + math.cos(math.pi * min((t - w) / max(e - w, 1e-9), 1.0)))
    if r.schedule == "onecycle":  # linear from lr/25 up to lr over the first quarter, then down to 0
        peak = 0.25 * e
        return 0.04 + 0.96 * t / peak if t < peak else max(0.0, (e - t) / (e - peak))
    raise ValueError(f"unknown schedule {r.schedule!r}.")


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    r = recipe
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 and not r.decay_norm_bias else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]  # fmt: skip
    info = OPTIMIZERS[r.optimizer]
    module, _, name = info.cls.rpartition(".")
    kwargs = dict(info.kwargs, **({"momentum": r.momentum} if info.momentum else {}))
    if device.type == "cuda":
        kwargs.update({"fused": True} if info.fused else {"foreach": True} if info.foreach else {}, **info.cuda_kwargs)
    return getattr(importlib.import_module(module), name)(groups, lr=r.lr, **kwargs)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load `saved` (from any device type) into an optimizer make_optimizer built for this one, keeping
    this device's DEVICE_FLAGS. Set before loading: torch places the step counters by them."""
    for group, own in zip(saved["param_groups"], optimizer.param_groups):
        group.update({k: own[k] for k in DEVICE_FLAGS if k in own})
    optimizer.load_state_dict(saved)


def fit(
    spec: ArchSpec,
    recipe: Recipe,
    data: Split,
    *,
    device: torch.device | str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    compile: bool = False,
    deterministic: bool = False,
    tta: bool = False,
    threads: int | None = None,
    score_every: int = 1,
) -> FitResult:
    """Train for `recipe.epochs` epochs on `data.train_*`, scoring on `data.val_*` after every
    `score_every`-th epoch and the last (the others' val_loss and val_acc are NaN; scoring draws no
    random numbers, so how often it runs does not change the training).

    `on_epoch(epoch, metrics)` runs after every epoch (1-based); an exception it raises stops the
    run and propagates (that is how a pruner stops a trial). With `checkpoint`, the full state is
    written atomically every `checkpoint_every` epochs and at the end; `resume=True` continues from
    it when it exists. `compile=True` wraps the model in `torch.compile`: worth it for long runs.
    `deterministic=True` makes a GPU run bit-reproducible (and so a resumed one exact), at a cost;
    on the CPU it keeps torch's thread count instead of probing.
    Running out of device memory, however the GPU libraries report it, ends the run with status oom.
    On the CPU, `threads` pins the intra-op thread count; None lets the first steps choose it
    (`nas.device.CpuThreads`; each history row records the count).
    """
    start = time.perf_counter()
    device = resolve_device(device)
    layout = memory_format(device)
    precision = choose_precision(recipe.precision, device)
    dtype = DTYPES[precision]
    if data.train_x.device != device:
        data = data.to(device, batch_size=recipe.batch_size)
    have = data.shape
    if {k: getattr(spec, k) for k in have} != have:
        raise NasError(
            f"the architecture expects {spec.classes} classes of {spec.in_channels}x{spec.image_size}px images; "
            f"the data has {have['classes']} classes of {have['in_channels']}x{have['image_size']}px."
        )
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)  # current stream and new allocations on this GPU, not on GPU 0
    configure(device, precision, deterministic)
    history: list[dict[str, float]] = []
    cpu_threads = None
    ckpt = Path(checkpoint) if checkpoint else None
    try:
        torch.manual_seed(recipe.seed)
        model = build_model(spec).to(device, memory_format=layout)
        optimizer = make_optimizer(model, recipe, device)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 gradients underflow unscaled
        batches = TrainBatches(data.train_x, data.train_y, recipe, data.mean, data.std, spec.classes, dtype,
                               recipe.seed, layout)  # fmt: skip
        val_x = prepare(data.val_x, Normalize(data.mean, data.std, device), dtype, layout)
        if ckpt and resume and ckpt.exists():
            history = _restore(ckpt, spec, recipe, precision, model, optimizer, scaler, batches, device)
        if not cuda:  # a resumed run keeps the count its first part chose; a deterministic one, torch's
            cpu_threads = CpuThreads.for_run(threads or (history[-1].get("threads") if history else None)
                                             or (torch.get_num_threads() if deterministic else None))  # fmt: skip
        step_model = _compiled(model) if compile else model
        autocast = _autocast(precision, device)
        params = list(model.parameters())
        steps = len(batches)
        for epoch in range(len(history) + 1, recipe.epochs + 1):
            t0 = time.perf_counter()
            clock = _Clock(cuda)
            model.train()
            sums = torch.zeros(2, device=device)  # loss sum, correct: summed on the device, read once
            for i, (x, t) in enumerate(cpu_threads.pace(batches) if cpu_threads else batches):
                lr = recipe.lr * lr_factor(recipe, epoch - 1 + (i + 0.5) / steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast:
                    logits = step_model(x)
                loss = F.cross_entropy(logits.float(), t, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # the scaler is a pass-through unless fp16
                if recipe.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip, foreach=cuda)
                scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
                scaler.update()
                hard = t if t.ndim == 1 else t.argmax(1)
                sums += torch.stack([loss.detach() * len(x), (logits.argmax(1) == hard).sum().float()])
            clock.stop()
            scored = epoch % score_every == 0 or epoch == recipe.epochs
            val = (_evaluate(model, val_x, data.val_y, autocast, tta) if scored  # eager: see _compiled
                   else torch.full((2,), math.nan, device=device))  # fmt: skip
            loss_sum, correct, val_loss, val_correct = torch.cat([sums, val]).tolist()  # the epoch's one sync
            n = steps * batches.batch_size
            row = {
                "epoch": epoch,
                "train_loss": loss_sum / n,
                "train_acc": correct / n,
                "val_loss": val_loss / len(val_x),
                "val_acc": val_correct / len(val_x),
                "lr": lr,
                "seconds": time.perf_counter() - t0,  # wall time of the epoch, evaluation included
                "train_seconds": clock.seconds(),  # the training steps alone
                "threads": torch.get_num_threads(),  # CPU intra-op threads at the epoch's end
            }
            history.append(row)
            if not math.isfinite(row["train_loss"]):
                return FitResult("nan", history, model, time.perf_counter() - start,
                                 f"training loss became {row['train_loss']} in epoch {epoch}", precision)  # fmt: skip
            if ckpt and (epoch == recipe.epochs or (checkpoint_every and epoch % checkpoint_every == 0)):
                _save(ckpt, spec, recipe, precision, model, optimizer, scaler, batches, history, device)
            if on_epoch:
                on_epoch(epoch, row)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        # Returning drops the model and batches; the caller gives the cache back (nas.device.release_memory).
        return FitResult("oom", history, None, time.perf_counter() - start, str(e).splitlines()[0], precision)
    finally:
        if cpu_threads:
            cpu_threads.restore()
    model.eval()
    return FitResult("complete", history, model, time.perf_counter() - start, precision=precision)


def _compiled(model: nn.Module) -> nn.Module:
    """`model` compiled for its training steps alone. Every architecture adds its own variants of
    ResNet.forward to one cache, and at torch's recompile limit (8) the rest of the process runs eager
    without a word: a search worker stopped compiling after about three trials. So the cache starts
    empty in each run, and evaluation (eval mode, the short last batch: two more variants, each a
    compile) runs eager; it is a small share of the work."""
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(model, backend=COMPILE_BACKEND)


def _logits(model: nn.Module, x: torch.Tensor, autocast, tta: bool) -> torch.Tensor:
    with autocast:
        logits = model(x).float()
        if tta:  # average with the mirror image's prediction
            logits = (logits + model(x.flip(3)).float()) / 2
    return logits


class _Clock:
    """Time of the training steps: CUDA events on the GPU (read after the epoch's sync, so timing
    adds none), the host clock on the CPU (where every op is synchronous)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        if cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = self.t1 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.t1 = time.perf_counter()

    def seconds(self) -> float:
        return self.start.elapsed_time(self.end) / 1000 if self.cuda else self.t1 - self.t0


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast, tta: bool) -> torch.Tensor:
    """[loss sum, correct] over prepared images, as a device tensor (no sync)."""
    model.eval()
    total = torch.zeros(2, device=x.device)
    for i in range(0, len(x), EVAL_BATCH):
        logits, yb = _logits(model, x[i : i + EVAL_BATCH], autocast, tta), y[i : i + EVAL_BATCH]
        total += torch.stack([F.cross_entropy(logits, yb, reduction="sum"), (logits.argmax(1) == yb).sum().float()])
    return total


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std, *, tta: bool = False,
             precision: str = "auto") -> dict[str, float]:  # fmt: skip
    """Loss and accuracy of `model` on uint8 `images` (on the model's device)."""
    device = next(model.parameters()).device
    precision = choose_precision(precision, device)
    x = prepare(images.to(device), Normalize(mean, std, device), DTYPES[precision], memory_format(device))
    autocast = _autocast(precision, device)
    loss, correct = _evaluate(model, x, labels.to(device), autocast, tta).tolist()
    return {"loss": loss / len(x), "acc": correct / len(x)}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, mean, std, *, tta: bool = False,
            precision: str = "auto") -> torch.Tensor:  # fmt: skip
    """Class probabilities for uint8 `images` (on the host), batched on the model's device: the normalisation
    constants go there once, and the probabilities come back to the host in one copy."""
    device = next(model.parameters()).device
    precision = choose_precision(precision, device)
    autocast, normalize, layout = _autocast(precision, device), Normalize(mean, std, device), memory_format(device)
    model.eval()
    out = []
    for i in range(0, len(images), EVAL_BATCH):
        x = prepare(images[i : i + EVAL_BATCH].to(device, non_blocking=True), normalize, DTYPES[precision], layout)
        out.append(_logits(model, x, autocast, tta).softmax(1))
    return torch.cat(out).cpu()


# ------------------------------------------------------------------------------------- checkpoints


def _save(path: Path, spec, recipe, precision, model, optimizer, scaler, batches, history, device) -> None:
    state: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "spec": spec.to_dict(),
        "recipe": recipe.to_dict(),
        "precision": precision,
        "device_type": device.type,
        "history": history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),  # empty unless fp16
        "batches": batches.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def checkpoint_progress(path: Path) -> tuple[int, int]:
    """(epochs done, epochs of the run) a checkpoint records."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NasError(f"cannot read checkpoint {path}: {e}") from None
    return len(state["history"]), state["recipe"]["epochs"]


def _restore(path: Path, spec, recipe, precision, model, optimizer, scaler, batches, device) -> list[dict[str, float]]:
    """Load a checkpoint into the run's objects. Another precision is allowed (said on stderr); so is
    another device type, where the device-specific random generators cannot carry over (a CPU
    generator's state is a Mersenne Twister's, a CUDA one's a Philox counter): they are reseeded, so
    data order, augmentation and dropout differ from what the uninterrupted run would have drawn."""
    try:
        # On the CPU: load_state_dict moves what belongs on the device, and the generator and RNG
        # states must be CPU tensors (a CUDA generator's set_state refuses anything else).
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise NasError(f"cannot read checkpoint {path}: {e}") from None
    if state.get("version") not in READABLE_CHECKPOINTS:
        raise NasError(f"checkpoint {path} is from another version of nas; start without --resume.")
    other = lambda r: {k: v for k, v in r.items() if k != "precision"}  # noqa: E731
    if state["spec"] != spec.to_dict() or other(state["recipe"]) != other(recipe.to_dict()):
        raise NasError(f"checkpoint {path} was written for another architecture or recipe; start without --resume.")
    model.load_state_dict(state["model"])
    load_optimizer_state(optimizer, state["optimizer"])
    saved_precision = state.get("precision")  # version 1 did not say
    if saved_precision == precision and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    elif saved_precision not in (None, precision):
        log.warning(f"resuming {path} in {precision}; it was trained in {saved_precision} so far.")
    saved_device = state.get("device_type") or ("cuda" if state["cuda_rng"] is not None else "cpu")
    torch.set_rng_state(state["torch_rng"])
    if saved_device == device.type:
        batches.load_state_dict(state["batches"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    else:
        reseed = recipe.seed + len(state["history"])
        batches.load_state_dict(state["batches"], device_generator_seed=reseed)
        if device.type == "cuda":
            torch.cuda.manual_seed(reseed)
        log.warning(f"resuming {path} on {device.type}; it was written on {saved_device}. Model, optimizer and "
                    f"schedule continue exactly, but the random stream (data order, augmentation, dropout) "
                    f"differs from what an uninterrupted run would have drawn.")  # fmt: skip
    return list(state["history"])
