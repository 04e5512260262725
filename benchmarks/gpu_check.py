"""The first GPU run: every GPU-specific path of nas exercised, and the GPU targets measured, in four
parts that each fit one call of a lent GPU machine (benchmarks/gpu_check.sh calls this):

    NAS_CIFAR10_JPEG=/path/to/cifar10-jpeg benchmarks/gpu_check.sh --only speed --record FILE
    benchmarks/gpu_check.sh --smoke                   # any machine, CPU, tiny data: is the script sound?

Each row is appended to the record (--record FILE; default benchmarks/RESULTS.md on a GPU, a temporary
file with --smoke) as soon as it is measured, under a dated heading naming the device and the command,
so a part cut short keeps what it measured. One failing check is reported and the others still run; the
exit status is 1 if any check raised. --only takes parts and single checks, comma-separated.

Parts, each with its length on one H100 estimated from FLOPs (nothing here has run on a GPU yet, so
every GPU target and estimate is unmeasured). resnet24 is 0.80 GMACs an image, ~4.8 GFLOP an image
trained, 240 TFLOP a CIFAR-10 epoch: ~1.2 s at 200 TFLOP/s (a fifth of the H100's dense bf16 peak),
~7 s in fp32 without TF32 (~35 TFLOP/s). Every part starts with `environment` (device, compute
capability, the precision auto picks, NVML, allocator settings: seconds).
  paths     ~5 min: decode (60,000 JPEGs in one process per core, then the cached load: ~10 s);
            optimizers (all 8 one epoch of 2,048 images in bf16 and in fp16 with the loss scaler, finite
            losses: 16 runs of ~3 s setup and autotuning each); resume (deterministic: killed and resumed
            equals uninterrupted bit for bit; default: how far it drifts; 6 runs of 4 epochs of 10,000
            images, ~1 min); devices (a GPU checkpoint resumes on the CPU and the reverse: ~30 s); oom (a
            2-worker search on one GPU with one trial enqueued to run out of memory, recorded as oom while
            the other trials train: ~30 s of worker start-up and 4 small trials)
  speed     ~4 min: resnet24 epochs at batch 512 in auto (bf16), fp16, fp32 (no TF32) and auto + compile:
            epoch <= 1.0 s, first-epoch overhead <= 3 s; after how many epochs compiling pays (5 epochs each:
            ~6 s in bf16 or fp16, ~35 s in fp32, 1-2 min to compile resnet24, setup)
  accuracy  ~2 min: 30 epochs of one-cycle SGD, test accuracy >= 87.5% on the JPEG copy (~40 s);
            retrain: resnet24 for 20 of 200 epochs, extrapolated (target <= 4 min; ~30 s)
  search    ~3 min: a 2-worker search of the default space, 16 trials of 5 proxy epochs: trials/h and
            GPU busy; 200 trials extrapolated (target <= 20 min, busy >= 85%). The space's nets under 5M
            parameters have 221M MACs an image at the median (nas count): ~300 TFLOP a trial, ~2 s of GPU
            and ~3 s of setup each

The accuracy target is for the CIFAR-10 JPEG copy the lab's machines have (quality 75): networks score
about 3 points lower on it than on the original (shared data README: airbench94 90.63% against 94.01%),
so the 90.5% first set for the original data is 87.5% here.

--smoke runs the same code on the CPU with a tiny net and a generated image folder, so that the
script is known to work before a GPU is at hand; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from nas.arch import ArchSpec
from nas.bench import append_row, device_name, run_bench, start_record
from nas.data import Split, load_dataset, test_split, validation_split
from nas.device import choose_precision, cpu_cores, release_memory, resolve_device
from nas.progress import Progress
from nas.recipe import OPTIMIZERS, Recipe
from nas.search import SearchConfig, run_search
from nas.space import load_preset
from nas.train import fit

HERE = Path(__file__).resolve().parent
TARGET_EPOCH_S, TARGET_OVERHEAD_S = 1.0, 3.0
TARGET_ACC = 0.905 - 0.03  # 90.5% on the original CIFAR-10; networks score ~3 points lower on the JPEG copy
TARGET_SEARCH_MIN, TARGET_BUSY, TARGET_RETRAIN_MIN = 20.0, 0.85, 4.0
LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adadelta": 1.0, "adagrad": 0.01}  # others: 0.05
# Each part fits one device call (10 minutes at most, 8 for the check): minutes on an H100 estimated from
# FLOPs (see above), unmeasured.
PARTS = {"paths": (("decode", "optimizers", "resume", "devices", "oom"), 5), "speed": (("speed",), 4),
         "accuracy": (("accuracy", "retrain"), 2), "search": (("search",), 3)}  # fmt: skip


@dataclass
class Plan:
    """What the check runs: the real thing on a GPU, or a tiny smoke run of the same code on the CPU."""

    device: torch.device
    dataset: str
    spec: dict[str, Any]
    recipe: Recipe
    batch: int
    bench_epochs: int
    accuracy_epochs: int
    resume_images: int  # training images of the resume check
    search_trials: int
    search_space: str
    search_dataset: str
    retrain_epochs: int
    smoke: bool
    record: Path | None = None  # rows go there as they are measured, once main has written the heading
    failed: list[str] = field(default_factory=list)

    def row(self, what: str, result: str, ok: bool | None = None) -> None:
        """`ok`: whether a target was met (a smoke run's figures meet nothing: not judged)."""
        mark = "" if ok is None or self.smoke else " ✓" if ok else " ✗ MISSED"
        if self.record:
            append_row(self.record, what, result + mark)
        print(f"  {what}: {result}{mark}", flush=True)


def make_plan(args: argparse.Namespace, tmp: Path) -> Plan:
    if args.smoke:
        folder = tmp / "images"
        write_image_folder(folder, train=240, test=60)
        spec = ArchSpec(blocks=[1, 1], channels=[8, 16]).to_dict()
        return Plan(resolve_device("cpu"), f"imagefolder:{folder}", spec, Recipe(epochs=200), 40, 2, 1, 160, 2,
                    "tiny", f"imagefolder:{folder}", 1, smoke=True)  # fmt: skip
    data = os.environ.get("NAS_CIFAR10_JPEG")
    if not data or not Path(data, "train").is_dir():
        sys.exit("gpu_check: set NAS_CIFAR10_JPEG to the CIFAR-10 JPEG copy (a folder with train/ and test/), "
                 "or pass --smoke for the CPU smoke run.")  # fmt: skip
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is visible; pass --smoke for the CPU smoke run.")
    _, spec, recipe = load_preset("resnet24")
    return Plan(resolve_device("cuda"), f"imagefolder:{data}", spec.to_dict(), recipe, 512, 5, 30, 10_000, 16,
                "resnet_cifar", f"imagefolder:{data}", 20, smoke=False)  # fmt: skip


def write_image_folder(root: Path, train: int, test: int) -> None:
    """A small ImageFolder of generated PNGs (nas's synthetic images), so --smoke decodes real files."""
    import numpy as np
    from PIL import Image

    from nas.data import synthetic

    ds = synthetic(train, size=16)  # small images: the smoke run is about the code, not the speed
    for split, x, y, n in (("train", ds.train_x, ds.train_y, train), ("test", ds.test_x, ds.test_y, test)):
        for i in range(n):
            folder = root / split / ds.classes[int(y[i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(x[i].permute(1, 2, 0).numpy())).save(folder / f"{i}.png")


# ------------------------------------------------------------------------------------------ checks


def check_environment(plan: Plan) -> None:
    dev = plan.device
    plan.row("device", f"{device_name(dev)}, torch {torch.__version__}")
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        plan.row("precision auto", f"{choose_precision('auto', dev)} (compute capability {major}.{minor})")
        try:
            plan.row("NVML", f"GPU busy readable ({torch.cuda.utilization(dev)}% now)")
        except Exception as e:
            plan.row("NVML", f"unavailable: {type(e).__name__}: {e}", ok=False)
    else:
        plan.row("precision auto", choose_precision("auto", dev))
    plan.row("allocator", os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default (search workers set expandable_segments)"))


def check_decode(plan: Plan) -> None:
    from nas.data import IMAGE_SUFFIXES, decode_images

    root = Path(plan.dataset.split(":", 1)[1])
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    t0 = time.perf_counter()
    images = decode_images(paths, None)
    first = time.perf_counter() - t0
    plan.row("first decode", f"{len(paths):,} images {tuple(images.shape[1:])} in {first:.2f} s "
             f"({first / len(paths) * 1e6:.0f} µs/image, {cpu_cores()} cores)")  # fmt: skip
    load_dataset(plan.dataset)  # writes the cache if there is none yet
    t0 = time.perf_counter()
    load_dataset(plan.dataset)
    plan.row("cached load", f"{time.perf_counter() - t0:.2f} s")


def subset(split: Split, n: int) -> Split:
    return replace(split, train_x=split.train_x[:n], train_y=split.train_y[:n])


def check_optimizers(plan: Plan) -> None:
    ds = load_dataset(plan.dataset)
    spec = ArchSpec.from_dict({**plan.spec, **ds.shape})
    split = subset(validation_split(ds, val_size=min(1000, len(ds.train_y) // 5)), 4 * plan.batch).to(plan.device, batch_size=plan.batch)
    for precision in ("bf16", "fp16"):
        try:
            choose_precision(precision, plan.device)
        except ValueError as e:
            plan.row(f"optimizers {precision}", f"skipped: {e}")
            continue
        losses, t0 = {}, time.perf_counter()
        for name in OPTIMIZERS:
            recipe = replace(plan.recipe, optimizer=name, lr=LR.get(name, 0.05), epochs=1, batch_size=plan.batch,
                             precision=precision, momentum=0.9, grad_clip=1.0 if precision == "fp16" else 0.0)  # fmt: skip
            r = fit(spec, recipe, split, device=plan.device)
            losses[name] = r.final.get("train_loss", math.nan) if r.status == "complete" else math.nan
        finite = [n for n, v in losses.items() if math.isfinite(v)]
        shown = ", ".join(f"{n} {v:.2f}" for n, v in losses.items())
        plan.row(f"optimizers {precision}", f"{len(finite)}/{len(OPTIMIZERS)} finite, {time.perf_counter() - t0:.0f} s "
                 f"({shown})", ok=len(finite) == len(OPTIMIZERS))  # fmt: skip


def check_speed(plan: Plan) -> None:
    runs = {}
    for label, precision, compile in (("auto", "auto", False), ("fp16", "fp16", False), ("fp32", "fp32", False),
                                      ("auto + compile", "auto", True)):  # fmt: skip
        recipe = replace(plan.recipe, batch_size=plan.batch, precision=precision)
        r = run_bench(plan.spec, recipe, plan.dataset, None, epochs=plan.bench_epochs, compile=compile,
                      device=str(plan.device))  # fmt: skip
        runs[label] = r
        memory = f", peak {r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else ""
        plan.row(f"epoch {label} ({r['precision']})",
                 f"{r['steady_epoch_seconds']:.2f} s wall, {r['steady_train_seconds']:.2f} s steps, "
                 f"{r['images_per_second']:,.0f} images/s, {r['tflops']:.1f} TFLOP/s{memory} "
                 f"(target <= {TARGET_EPOCH_S} s)", ok=r["steady_epoch_seconds"] <= TARGET_EPOCH_S)  # fmt: skip
        plan.row(f"first-epoch overhead {label}", f"{r['first_epoch_overhead_seconds']:.2f} s "
                 f"(target <= {TARGET_OVERHEAD_S} s)", ok=r["first_epoch_overhead_seconds"] <= TARGET_OVERHEAD_S)  # fmt: skip
    eager, compiled = runs["auto"], runs["auto + compile"]
    saving = eager["steady_epoch_seconds"] - compiled["steady_epoch_seconds"]
    cost = compiled["first_epoch_overhead_seconds"] - eager["first_epoch_overhead_seconds"]
    verdict = (f"pays after {cost / saving:.0f} epochs: worth it for a 200-epoch retrain, "
               f"{'worth' if cost / saving < 5 else 'not worth'} it for a 5-epoch proxy trial"
               if saving > 0 else "never pays: compiled epochs are not faster")  # fmt: skip
    plan.row("torch.compile", f"{cost:.1f} s to compile, {saving:+.3f} s per epoch: {verdict}")


def check_accuracy(plan: Plan) -> None:
    recipe = replace(plan.recipe, batch_size=plan.batch)
    r = run_bench(plan.spec, recipe, plan.dataset, None, epochs=1, accuracy_epochs=plan.accuracy_epochs,
                  device=str(plan.device))["accuracy_run"]  # fmt: skip
    plan.row(f"accuracy, {r['epochs']} epochs", f"{r['test_acc']:.2%} test, {r['test_acc_tta']:.2%} flip-TTA, "
             f"{r['seconds']:.0f} s (target >= {TARGET_ACC:.1%} on the JPEG copy)", ok=r["test_acc"] >= TARGET_ACC)  # fmt: skip


class Killed(Exception):
    pass


def killed_and_resumed(spec, recipe, split, device, path: Path, deterministic: bool) -> list[dict]:
    def kill(epoch, _):
        if epoch == recipe.epochs // 2:
            raise Killed

    try:
        fit(spec, recipe, split, device=device, checkpoint=path, checkpoint_every=1, deterministic=deterministic,
            on_epoch=kill)  # fmt: skip
    except Killed:
        pass
    return fit(spec, recipe, split, device=device, checkpoint=path, resume=True, deterministic=deterministic).history


def metrics(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def check_resume(plan: Plan, tmp: Path) -> None:
    ds = load_dataset(plan.dataset)
    spec = ArchSpec.from_dict({**plan.spec, **ds.shape})
    split = subset(validation_split(ds, val_size=min(2000, len(ds.train_y) // 5)), plan.resume_images).to(plan.device, batch_size=plan.batch)
    recipe = replace(plan.recipe, epochs=4, batch_size=plan.batch, cutout=8, mixup=0.2)
    for deterministic in (True, False):
        straight = fit(spec, recipe, split, device=plan.device, deterministic=deterministic)
        resumed = killed_and_resumed(spec, recipe, split, plan.device, tmp / f"resume-{deterministic}.pt", deterministic)
        exact = metrics(resumed) == metrics(straight.history)
        drift = max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(resumed, straight.history))
        epoch = statistics.median(h["seconds"] for h in straight.history[1:])
        label = "deterministic" if deterministic else "default"
        plan.row(f"resume, {label}", f"{'bit-exact' if exact else f'differs (val loss up to {drift:.2e} apart)'}, "
                 f"{epoch:.2f} s per epoch of {plan.resume_images:,} images",
                 ok=exact if deterministic else None)  # fmt: skip
    torch.use_deterministic_algorithms(False)


def check_devices(plan: Plan, tmp: Path) -> None:
    if plan.device.type != "cuda":
        plan.row("resume across devices", "skipped: needs a GPU (tests/test_train.py fakes the CUDA checkpoint)")
        return
    ds = load_dataset(plan.dataset)
    spec = ArchSpec(blocks=[1, 1], channels=[16, 32], **ds.shape)
    split = subset(validation_split(ds, val_size=500), 2000)
    recipe = Recipe(epochs=2, batch_size=250, seed=1)
    for first, then in ((plan.device, torch.device("cpu")), (torch.device("cpu"), plan.device)):
        path = tmp / f"{first.type}-to-{then.type}.pt"
        try:
            fit(spec, recipe, split, device=first, checkpoint=path, checkpoint_every=1,
                on_epoch=lambda e, _: (_ for _ in ()).throw(Killed()))  # fmt: skip
        except Killed:
            pass
        r = fit(spec, recipe, split, device=then, checkpoint=path, resume=True)
        plan.row(f"resume {first.type} -> {then.type}", f"{r.status}, {len(r.history)} epochs, val {r.final['val_acc']:.3f}",
                 ok=r.status == "complete" and len(r.history) == 2)  # fmt: skip


def search(plan: Plan, tmp: Path, name: str, space: str, trials: int, budget: int, enqueue: dict | None = None):
    jobs = (str(plan.device),) * 2
    cfg = SearchConfig(budget=budget, trials=trials, space=space, dataset=plan.search_dataset, study=name,
                       storage=f"sqlite:///{tmp / name}.db", proxy_epochs=1 if plan.smoke else 5, devices=jobs)  # fmt: skip
    if enqueue:  # a bare study holding one queued trial; run_search makes it a nas study and pops it first
        import optuna

        optuna.create_study(study_name=name, storage=cfg.storage, direction="maximize").enqueue_trial(enqueue)
    progress = Progress(sys.stdout, live=False)
    t0 = time.perf_counter()
    try:
        study = run_search(cfg, progress)
    finally:
        progress.close()  # as nas search does: the display's thread stops
    return study, progress.summary(study), time.perf_counter() - t0


def check_oom(plan: Plan, tmp: Path) -> None:
    # The whole training set (45,000 images) in one batch through 4 blocks of 128 channels at 32 px:
    # hundreds of GB of activations, more than any GPU has.
    huge = {"batch_size": 2**17, "blocks_0": 4, "channels_0": 128, "channels_1": 128}
    study, _, seconds = search(plan, tmp, "oom", str(HERE / "oom_space.yaml"), 4, 5_000_000, huge)
    first = min(study.trials, key=lambda t: t.number)
    reasons = [t.user_attrs.get("reason", "complete") for t in sorted(study.trials, key=lambda t: t.number)]
    if plan.device.type == "cuda":
        ok = first.user_attrs.get("reason") == "oom" and reasons.count("oom") == 1 and len(reasons) >= 4
        plan.row("induced OOM in a 2-worker search", f"trials {reasons} in {seconds:.0f} s; the OOM: "
                 f"{first.user_attrs.get('error', '?')[:120]}", ok=ok)  # fmt: skip
    else:
        plan.row("induced OOM in a 2-worker search", f"not inducible on the CPU (the one-batch trial trained on the "
                 f"whole small set); trials {reasons} in {seconds:.0f} s")  # fmt: skip


def check_search(plan: Plan, tmp: Path) -> None:
    study, summary, seconds = search(plan, tmp, "search", plan.search_space, plan.search_trials, 5_000_000)
    trained = summary["trained"]
    per_trial = seconds / max(1, trained)
    estimate = 200 * per_trial / 60  # the fixed start-up of the workers is spread over the trials: conservative
    plan.row(f"search, 2 workers, {trained} trials", f"{seconds:.0f} s wall, {summary['trials_per_hour'] or 0:.0f} "
             f"trials/h; 200 trials ~{estimate:.1f} min (target <= {TARGET_SEARCH_MIN:.0f} min)",
             ok=estimate <= TARGET_SEARCH_MIN)  # fmt: skip
    busy = summary["gpu_busy"]
    plan.row("GPU busy during the search", summary["gpu_busy_text"] or "no GPU in use",
             ok=None if busy is None else busy >= TARGET_BUSY)  # fmt: skip
    precisions = sorted({t.user_attrs.get("precision", "?") for t in study.trials if "precision" in t.user_attrs})
    plan.row("search trial precision", ", ".join(precisions))


def check_retrain(plan: Plan, tmp: Path) -> None:
    ds = load_dataset(plan.dataset)
    spec = ArchSpec.from_dict({**plan.spec, **ds.shape})
    recipe = replace(plan.recipe, epochs=plan.retrain_epochs)
    t0 = time.perf_counter()
    split = test_split(ds).to(plan.device, batch_size=recipe.batch_size)
    r = fit(spec, recipe, split, device=plan.device, checkpoint=tmp / "retrain.pt", checkpoint_every=5)
    wall = time.perf_counter() - t0
    epoch = statistics.median(h["seconds"] for h in r.history[1:] or r.history)
    estimate = (wall - sum(h["seconds"] for h in r.history) + r.history[0]["seconds"] + 199 * epoch) / 60
    plan.row(f"retrain {spec.describe()}, {plan.retrain_epochs} epochs", f"{wall:.0f} s, {epoch:.2f} s per epoch; 200 epochs "
             f"~{estimate:.1f} min (target <= {TARGET_RETRAIN_MIN:.0f} min)", ok=estimate <= TARGET_RETRAIN_MIN)  # fmt: skip


# ------------------------------------------------------------------------------------------- main


def checks_to_run(only: str | None) -> list[str]:
    """The checks `--only` names (parts and single checks, comma-separated; all parts without it), in the
    order given, each once, `environment` first."""
    names = only.split(",") if only else list(PARTS)
    known = [*PARTS, "environment", *(c for checks, _ in PARTS.values() for c in checks)]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"gpu_check: unknown part or check {unknown[0]!r}; parts: {', '.join(PARTS)}; "
                 f"checks: {', '.join(known[len(PARTS):])}.")  # fmt: skip
    wanted = ["environment"] + [c for n in names for c in (PARTS[n][0] if n in PARTS else (n,))]
    return list(dict.fromkeys(wanted))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny generated data: check the script itself")
    p.add_argument("--record", help="Markdown file each row is appended to as it is measured (default: "
                   "benchmarks/RESULTS.md on a GPU; a temporary file with --smoke)")  # fmt: skip
    p.add_argument("--only", help=f"comma-separated parts ({', '.join(PARTS)}; default: all, which no single "
                   f"device call fits) or single checks")  # fmt: skip
    args = p.parse_args()
    wanted = checks_to_run(args.only)
    minutes = sum(m for checks, m in PARTS.values() if set(checks) & set(wanted))  # of the parts it touches
    with tempfile.TemporaryDirectory(prefix="nas-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        plan = make_plan(args, tmp)
        checks: dict[str, Callable[[], None]] = {
            "environment": lambda: check_environment(plan),
            "decode": lambda: check_decode(plan),
            "optimizers": lambda: check_optimizers(plan),
            "speed": lambda: check_speed(plan),
            "accuracy": lambda: check_accuracy(plan),
            "resume": lambda: check_resume(plan, tmp),
            "devices": lambda: check_devices(plan, tmp),
            "oom": lambda: check_oom(plan, tmp),
            "search": lambda: check_search(plan, tmp),
            "retrain": lambda: check_retrain(plan, tmp),
        }
        record = Path(args.record) if args.record else None if plan.smoke else HERE / "RESULTS.md"
        if record is None:
            record = Path(tempfile.gettempdir()) / f"nas-gpu-check-smoke-{datetime.date.today().isoformat()}.md"
        command = "benchmarks/gpu_check.sh" + " --smoke" * plan.smoke + (f" --only {args.only}" if args.only else "")
        start_record(record, device_name(plan.device), command)
        plan.record = record
        print(f"{', '.join(wanted)}: ~{minutes} min on an H100 (estimated from FLOPs, unmeasured); rows go to {record}")
        start = time.perf_counter()
        for name in wanted:
            print(f"[{time.perf_counter() - start:5.0f} s] {name}", flush=True)
            try:
                checks[name]()
            except Exception as e:  # report it and go on: one broken path must not hide the others
                traceback.print_exc()
                plan.failed.append(name)
                plan.row(name, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            release_memory(plan.device)  # the next check (or a search's workers) gets the GPU's memory back
        plan.row("whole check", f"{(time.perf_counter() - start) / 60:.1f} min, "
                 f"{'all checks ran' if not plan.failed else 'failed: ' + ', '.join(plan.failed)}")  # fmt: skip
        print(f"results appended to {record}")
    return 1 if plan.failed else 0


if __name__ == "__main__":
    sys.exit(main())
