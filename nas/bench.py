"""`nas bench`: how fast the engine trains one architecture, and how accurate a short run gets.

Speed: a few epochs over the whole training set; per-epoch wall time, the training steps' own time
(CUDA events), images/s, achieved TFLOP/s (training = 3 x forward, 2 FLOPs per MAC from
`count_macs`), the first epoch's overhead (data to the device, model build, autotuning) and peak
device memory. Accuracy (`--accuracy-run N`): N epochs of one-cycle Nesterov SGD, plain and
flip-TTA test accuracy.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas.arch import ArchSpec
from nas.count import count_macs, count_params
from nas.data import load_dataset, test_split
from nas.device import resolve_device
from nas.errors import NasError
from nas.recipe import Recipe
from nas.train import evaluate, fit

# The short-run recipe of the accuracy check: one-cycle Nesterov SGD (super-convergence), the
# preset's augmentation kept.
ACCURACY_RUN = dict(optimizer="sgd-nesterov", lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                    label_smoothing=0.1, decay_norm_bias=False)  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({cpu_model()}, {threads} thread{'' if threads == 1 else 's'})"


def cpu_model() -> str:
    """'AMD EPYC 9R14' and the like (Linux's /proc/cpuinfo), else what the platform says: every
    figure names the CPU it was measured on, as machines of one name differ (AVX-512, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def epoch_figures(history: list[dict[str, float]], run_seconds: float) -> tuple[float, float, float, float]:
    """(steady epoch wall s, steady training-steps s, setup s, first epoch's extra s) of a `fit` run.

    Steady: the median over the epochs after the first. Setup: the run's time outside its epochs
    (model build, optimizer, evaluation data). The first epoch's extra is what it took beyond a steady
    epoch (autotuning, warm-up); on a noisy machine it may come out faster, which is no overhead."""
    later = history[1:] or history
    steady_wall = statistics.median(r["seconds"] for r in later)
    steady_train = statistics.median(r["train_seconds"] for r in later)
    setup = max(0.0, run_seconds - sum(r["seconds"] for r in history))
    return steady_wall, steady_train, setup, max(0.0, history[0]["seconds"] - steady_wall)


def run_bench(spec_dict: dict[str, Any], recipe: Recipe, dataset: str, data_dir: str | None, *, epochs: int,
              accuracy_epochs: int = 0, compile: bool = False, device: str | None = None) -> dict[str, Any]:  # fmt: skip
    dev = resolve_device(device)
    # Once per process, not per trial: the first optimizer imports torch._dynamo (1-3 s). Paid
    # here so the overhead below is what every new architecture costs a search worker.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    t0 = time.perf_counter()
    ds = load_dataset(dataset, data_dir)
    spec = ArchSpec.from_dict({**spec_dict, **ds.shape})
    split = test_split(ds).to(dev, batch_size=recipe.batch_size)  # an epoch is the whole training set
    data_seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    run = fit(spec, replace(recipe, epochs=epochs), split, device=dev, compile=compile)
    if run.status != "complete":
        raise NasError(f"the speed run ended with status {run.status}: {run.message}")
    h = run.history
    steady_wall, steady_train, setup, first_extra = epoch_figures(h, run.seconds)
    n, bs = len(split.train_y), min(recipe.batch_size, len(split.train_y))
    images = n // bs * bs  # fit drops the last partial batch
    flops = 3 * 2 * count_macs(spec) * images
    out: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": device_name(dev),
        "torch": torch.__version__,
        "dataset": ds.name,
        "spec": spec.describe(),
        "params": count_params(spec),
        "macs": count_macs(spec),
        "batch_size": recipe.batch_size,
        "precision": run.precision,
        "compile": compile,
        "epochs": [{k: r[k] for k in ("epoch", "seconds", "train_seconds")} for r in h],
        "images_per_epoch": images,
        "steady_epoch_seconds": steady_wall,
        "steady_train_seconds": steady_train,
        "images_per_second": images / steady_train,
        "tflops": flops / steady_train / 1e12,
        "data_seconds": data_seconds,
        "setup_seconds": setup,
        "first_epoch_extra_seconds": first_extra,
        "first_epoch_overhead_seconds": data_seconds + setup + first_extra,
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
    if accuracy_epochs:
        acc_recipe = replace(recipe, **ACCURACY_RUN, epochs=accuracy_epochs)
        t1 = time.perf_counter()
        acc = fit(spec, acc_recipe, split, device=dev, compile=compile)
        if acc.status != "complete":
            raise NasError(f"the accuracy run ended with status {acc.status}: {acc.message}")
        tta = evaluate(acc.model, ds.test_x, ds.test_y, split.mean, split.std, tta=True, precision=acc.precision)
        out["accuracy_run"] = {
            "epochs": accuracy_epochs,
            "recipe": {k: v for k, v in acc_recipe.to_dict().items() if v != getattr(Recipe(), k) or k == "lr"},
            "test_acc": acc.final["val_acc"],
            "test_acc_tta": tta["acc"],
            "seconds": time.perf_counter() - t1,
        }
    return out


def summary(r: dict[str, Any]) -> str:
    lines = [
        f"{r['spec']}: {r['params']:,} params, {r['macs'] / 1e6:,.1f} M MACs/image",
        f"{r['device']} | torch {r['torch']} | {r['precision']} | batch {r['batch_size']} | compile {r['compile']} | "
        f"{r['dataset']} ({r['images_per_epoch']:,} images/epoch)",
        "epoch  wall s  train s",
        *(f"{e['epoch']:>5}  {e['seconds']:>6.2f}  {e['train_seconds']:>7.2f}" for e in r["epochs"]),
        f"steady epoch      {r['steady_epoch_seconds']:.2f} s wall, {r['steady_train_seconds']:.2f} s training steps",
        f"throughput        {r['images_per_second']:,.0f} images/s, {r['tflops']:.1f} TFLOP/s (3 x forward, 2 FLOPs/MAC)",
        f"first-epoch overhead  {r['first_epoch_overhead_seconds']:.2f} s (data {r['data_seconds']:.2f} s, "
        f"setup {r['setup_seconds']:.2f} s, first epoch +{r['first_epoch_extra_seconds']:.2f} s)",
    ]
    if r["peak_memory_gib"] is not None:
        lines.append(f"peak GPU memory   {r['peak_memory_gib']:.2f} GiB")
    if "accuracy_run" in r:
        a = r["accuracy_run"]
        lines.append(f"accuracy run      {a['epochs']} epochs in {a['seconds']:.1f} s: test {a['test_acc']:.2%}, "
                     f"flip-TTA {a['test_acc_tta']:.2%}")  # fmt: skip
    return "\n".join(lines)


def record(r: dict[str, Any], path: Path, command: str) -> None:
    """Append a bench result to a Markdown file."""
    rows = [
        ("architecture", f"{r['spec']} ({r['params']:,} params, {r['macs'] / 1e6:,.1f} M MACs/image)"),
        ("setting", f"{r['dataset']}, batch {r['batch_size']}, {r['precision']}, compile {r['compile']}, torch {r['torch']}"),
        ("steady epoch", f"{r['steady_epoch_seconds']:.2f} s wall ({r['steady_train_seconds']:.2f} s training steps, "
                         f"{r['images_per_epoch']:,} images)"),  # fmt: skip
        ("throughput", f"{r['images_per_second']:,.0f} images/s, {r['tflops']:.1f} TFLOP/s"),
        ("first-epoch overhead", f"{r['first_epoch_overhead_seconds']:.2f} s"),
    ]
    if r["peak_memory_gib"] is not None:
        rows.append(("peak GPU memory", f"{r['peak_memory_gib']:.2f} GiB"))
    if "accuracy_run" in r:
        a = r["accuracy_run"]
        rows.append(("accuracy run", f"{a['epochs']} epochs one-cycle SGD in {a['seconds']:.1f} s: "
                                     f"{a['test_acc']:.2%} test, {a['test_acc_tta']:.2%} flip-TTA"))  # fmt: skip
    append_record(path, r["device"], command, rows)


def append_record(path: Path, device: str, command: str, rows: list[tuple[str, str]]) -> None:
    """Append a dated Markdown section (`## date · device · command`, then a table) to `path`."""
    start_record(path, device, command)
    for what, result in rows:
        append_row(path, what, result)


def start_record(path: Path, device: str, command: str) -> None:
    """Append the heading and table head of a dated section; its rows follow with append_row. Passwords
    in the command (a storage URL) are recorded as ***: the file may be tracked by git."""
    from nas.study import hide_passwords

    command = hide_passwords(command)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"\n## {datetime.date.today().isoformat()} · {device} · `{command}`\n\n| | |\n|---|---|\n")


def append_row(path: Path, what: str, result: str) -> None:
    """One row of the section start_record began, written at once (a run cut short keeps its rows)."""
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731  (a bare | would end the cell)
    with open(path, "a") as f:
        f.write(f"| {cell(what)} | {cell(result)} |\n")
