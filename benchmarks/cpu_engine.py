"""`fit` against a training loop written the standard way, on the CPU: MLPerf Tiny's ResNet-8 on the
CIFAR-10 JPEG copy (issue 12, item 5).

The standard loop: torchvision `ImageFolder` + `transforms` (RandomCrop(32, padding=4, reflect),
RandomHorizontalFlip, ToTensor, Normalize) + `DataLoader` with worker processes, torch's default
threads, fp32. `fit`: the uint8 cache, batched augmentation, the engine's choices. Same model, same
recipe (the `mlperf-tiny-resnet8` preset's: Nesterov SGD lr 0.1, momentum 0.9, weight decay 5e-4,
per-step cosine, batch 128, crop 4 + flip), same epochs, the test set scored after every epoch by both. Each run is its own process
(peak RSS is per process: VmHWM; CPU time counts the DataLoader workers too), the variants interleaved round by round so machine load (these 2
cores are shared) hits them alike; ratios are of medians over the rounds of one invocation.

    python benchmarks/cpu_engine.py --data /tmp/c10/cifar10-jpeg [--epochs 2] [--seeds 0 1]
        [--train-size 50000] [--test-size 10000] [--variants standard fit-fp32 fit]

`--train-size`/`--test-size` take every k-th image of each set (stratified: the folders are sorted by
class), the same images for every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PRESET = "mlperf-tiny-resnet8"  # its arch and recipe, for both loops
WORKERS = 2  # DataLoader worker processes: one per core

# name: (what it is, settings)
VARIANTS = {
    "standard": ("ImageFolder + transforms + DataLoader, fp32, torch's default threads", {}),
    "standard-1t": ("the same with torch.set_num_threads(1) in the training process", {"threads": 1}),
    "fit-fp32": ("fit, fp32, torch's default thread count pinned", {"precision": "fp32", "threads": 0}),
    "fit-fp32-probe": ("fit, fp32, threads chosen by the probe", {"precision": "fp32"}),
    "fit-bf16-1t": ("fit, bf16 autocast, 1 thread pinned", {"precision": "bf16", "threads": 1}),
    "fit-fp32-1t": ("fit, fp32, 1 thread pinned", {"precision": "fp32", "threads": 1}),
    "fit": ("fit's defaults: precision auto (bf16 on native-bf16 CPUs), threads chosen by the probe", {}),
}


def peak_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def preset():
    """The preset's spec and recipe; refuses a recipe the hand-written standard loop does not follow."""
    from nas.space import load_preset

    _, spec, recipe = load_preset(PRESET)
    standard = dict(optimizer="sgd-nesterov", schedule="cosine", crop_padding=4, pad_mode="reflect", flip=True,
                    rotation=0.0, cutout=0, mixup=0.0, cutmix=0.0, label_smoothing=0.0, grad_clip=0.0,
                    decay_norm_bias=True)  # fmt: skip
    differ = {k: getattr(recipe, k) for k, v in standard.items() if getattr(recipe, k) != v}
    if differ:
        raise SystemExit(f"{PRESET}'s recipe has {differ}; the standard loop here does not: update run_standard.")
    return spec, recipe


def every_kth(n: int, size: int) -> list[int]:
    k = max(1, n // size)
    return list(range(0, n, k))[:size]


def run_fit(a, settings: dict) -> dict:
    import torch

    from dataclasses import replace

    from nas.data import load_dataset, test_split
    from nas.train import fit

    ds = load_dataset(f"imagefolder:{a.data}")
    split = test_split(ds)
    tr, te = every_kth(len(split.train_y), a.train_size), every_kth(len(split.val_y), a.test_size)
    if len(tr) < len(split.train_y):  # a subset is a copy; the whole set is not copied
        split.train_x, split.train_y = split.train_x[tr], split.train_y[tr]
    if len(te) < len(split.val_y):
        split.val_x, split.val_y = split.val_x[te], split.val_y[te]
    spec, recipe = preset()
    recipe = replace(recipe, epochs=a.epochs, seed=a.seed, precision=settings.get("precision", "auto"))
    threads = settings.get("threads")
    run = fit(spec, recipe, split, device="cpu",
              threads=threads or (torch.get_num_threads() if threads == 0 else None))  # fmt: skip
    h = run.history
    return {"epoch_s": [r["seconds"] for r in h], "train_s": [r["train_seconds"] for r in h],
            "test_acc": [r["val_acc"] for r in h], "threads": h[-1]["threads"],
            "images": len(tr) // recipe.batch_size * recipe.batch_size, "setup_s": run.seconds - sum(r["seconds"] for r in h)}  # fmt: skip


def run_standard(a, settings: dict) -> dict:
    import math

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from nas.model import build_model

    spec, r = preset()
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    t_start = time.perf_counter()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    train_tf = transforms.Compose([transforms.RandomCrop(spec.image_size, padding=r.crop_padding, padding_mode="reflect"),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(mean, std)])  # fmt: skip
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train = datasets.ImageFolder(f"{a.data}/train", train_tf)
    test = datasets.ImageFolder(f"{a.data}/test", test_tf)
    train = Subset(train, every_kth(len(train), a.train_size))
    test = Subset(test, every_kth(len(test), a.test_size))
    torch.manual_seed(a.seed)
    loader = DataLoader(train, batch_size=r.batch_size, shuffle=True, drop_last=True, num_workers=WORKERS, persistent_workers=True)
    test_loader = DataLoader(test, batch_size=1024, num_workers=WORKERS, persistent_workers=True)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=True, weight_decay=r.weight_decay)
    total = a.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * (s + 0.5) / total)))
    out = {"epoch_s": [], "train_s": [], "test_acc": [], "threads": torch.get_num_threads(),
           "images": len(loader) * r.batch_size, "setup_s": time.perf_counter() - t_start}  # fmt: skip
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        t1 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        out["epoch_s"].append(time.perf_counter() - t0)
        out["train_s"].append(t1 - t0)
        out["test_acc"].append(correct / len(test))
    workers = [w.pid for it in (loader._iterator, test_loader._iterator) for w in it._workers]
    out["workers_rss_mb"] = sum(peak_rss_mb(p) for p in workers)  # counts pages shared with the parent again
    del loader, test_loader  # the workers exit: their CPU time becomes the children's
    out["workers_cpu_s"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    return out


def one(a) -> None:
    name = a.one
    settings = VARIANTS[name][1]
    c0 = time.process_time()
    out = run_standard(a, settings) if name.startswith("standard") else run_fit(a, settings)
    out.update(variant=name, seed=a.seed, peak_rss_mb=peak_rss_mb(), cpu_s=time.process_time() - c0)
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="CIFAR-10 in ImageFolder layout: DATA/train/<class>/*.jpg, DATA/test/...")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one round of every variant per seed")
    p.add_argument("--train-size", type=int, default=50000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--variants", nargs="+", default=["standard", "fit-fp32", "fit"], choices=list(VARIANTS))
    p.add_argument("--log", help="append each run's JSON line to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        one(a)
        return
    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read()
    print(f"{cpu}, {os.cpu_count()} cores, avx512_bf16: {'avx512_bf16' in flags}, "
          f"oneDNN bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, torch {torch.__version__}, "
          f"default threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{a.epochs} epochs of {a.train_size} training images, {a.test_size} test images scored per epoch")
    runs: dict[str, list[dict]] = {v: [] for v in a.variants}
    for seed in a.seeds:
        for v in a.variants:
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--one", v, "--seed", str(seed)] + sum(
                ([f"--{k.replace('_', '-')}", str(getattr(a, k))] for k in ("data", "epochs", "train_size", "test_size")), [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"{v} seed {seed}: failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            out["load_before"] = load
            runs[v].append(out)
            if a.log:
                with open(a.log, "a") as f:
                    f.write(json.dumps(out) + "\n")
            workers = f" + workers {out['workers_rss_mb']:.0f} MB" if "workers_rss_mb" in out else ""
            print(f"{v} seed {seed}: epochs {[round(s, 1) for s in out['epoch_s']]} s, test acc "
                  f"{[round(x, 4) for x in out['test_acc']]}, threads {out['threads']}, "
                  f"peak RSS {out['peak_rss_mb']:.0f} MB{workers}, load {load:.1f}", flush=True)  # fmt: skip
    print(f"\n| variant | s/epoch (median) | images/s | vs {a.variants[0]} | CPU s (all processes) | peak RSS MB | test acc (final, per seed) |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for v in a.variants:
        if not runs[v]:
            continue
        per_epoch = statistics.median(s for r in runs[v] for s in r["epoch_s"])
        base = base or per_epoch
        ips = runs[v][0]["images"] / statistics.median(s for r in runs[v] for s in r["train_s"])
        rss = max(r["peak_rss_mb"] for r in runs[v])
        workers = max(r.get("workers_rss_mb", 0) for r in runs[v])
        cpu = statistics.median(r["cpu_s"] + r.get("workers_cpu_s", 0) for r in runs[v])
        accs = ", ".join(f"{r['test_acc'][-1]:.4f}" for r in runs[v])
        print(f"| {v} | {per_epoch:.1f} | {ips:.0f} | {base / per_epoch:.2f}x | {cpu:.0f} | {rss:.0f}"
              f"{f' (+ workers {workers:.0f})' if workers else ''} | {accs} |")


if __name__ == "__main__":
    main()
