"""The `nas` command: parsing and printing only; the work happens in the modules it calls.

Every error a user can cause (a `NasError`) ends in one line on stderr and exit status 2 (130 on
Ctrl-C); set NAS_DEBUG=1 to see where it was raised. Any other exception is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from dataclasses import fields
from typing import Any

from nas import __version__
from nas.blocks import BLOCKS, block_reads
from nas.errors import NasError

EXIT_USAGE = 2
WORKFLOW = """nas: find the most accurate image classifier under a hard parameter budget.

A first search, on generated images (a minute or a few, depending on the CPU):
  nas search --space search_spaces/tiny.yaml --dataset synthetic --trials 5 --budget 20k

The workflow:
  nas count --space search_spaces/resnet_cifar.yaml --budget 5M   how much of the space fits the budget
  nas search --budget 5M --trials 200                             propose, reject over budget, train proxies
  nas report                                                      leaderboard and figures
  nas retrain --top 3                                             train the best in full and test them
  nas predict --trial N --images DIR                              label images with a retrained trial
  nas export --trial N --int8                                     ONNX and int8 of a retrained trial, checked
  nas studies                                                     the studies here, and the flags that open each
  optuna-dashboard sqlite:///studies/<study>.db --artifact-dir studies/<study>/artifacts

nas COMMAND --help for a command's options; nas --help for the list of commands."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        print(WORKFLOW)
        return 0
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse's own message, with the option that was probably meant
        command = subcommands(parser)[args.command]
        command.error(f"unrecognized arguments: {' '.join(extra)}{did_you_mean(extra, command)}")
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # nas report | head: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 1
    except NasError as e:
        if os.environ.get("NAS_DEBUG"):
            raise
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a full disk or a read-only file, however deep it was raised, is one line too
        from nas.study import storage_failure

        why = storage_failure(e)
        if why is None or os.environ.get("NAS_DEBUG"):
            raise
        print(f"nas {args.command}: error: cannot write: {why}; what was stored before is kept: make room (or "
              f"make it writable) and run the same command again.", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def did_you_mean(extra: list[str], command: argparse.ArgumentParser) -> str:
    """' (did you mean --budget?)' for a misspelt option (Python 3.14's argparse suggests only among choices)."""
    import difflib

    known = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    guesses = [g for x in extra if x.startswith("--") for g in difflib.get_close_matches(x.split("=")[0], known, n=1)]
    return f" (did you mean {' and '.join(guesses)}?)" if guesses else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description=WORKFLOW.splitlines()[0].removeprefix("nas: ").capitalize(),
                                     epilog="nas alone prints the workflow; nas COMMAND --help a command's options.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_count(sub)
    _add_search(sub)
    _add_retrain(sub)
    _add_report(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_studies(sub)
    _add_trials(sub)
    _add_bench(sub)
    return parser


# ------------------------------------------------------------------------------------ value types


def parse_count(text: str) -> int:
    """'5e6', '5000000', '5M', '2.5m', '500k', '5_000_000' -> an int."""
    t = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([kmg]?)", t, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (try 5e6, 5000000 or 5M)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    if value > 1e15:  # 1e400 is infinite as a float; no network or dataset is near this
        raise argparse.ArgumentTypeError(f"{text!r} is too large (at most 1e15)")
    if value < 1:
        raise argparse.ArgumentTypeError(f"a count must be at least 1, got {text!r}")
    return int(round(value))


def parse_duration(text: str) -> float:
    """'2h', '30m', '90s', '1h30m', '3600' -> seconds (more than 0: a zero limit would read as none)."""
    t = text.strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([hms])", t)
        if not parts or "".join(a + b for a, b in parts) != t:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 2h, 30m, 90s or 1h30m)")
        seconds = sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be more than 0, got {text!r} (leave it out for no limit)")
    return seconds


def seed_value(text: str) -> int:
    """A seed: 0 to 2**32 - 1, what every generator the seed reaches accepts."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is between 0 and {2**32 - 1}, got {text!r}")
    return seed


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def pool_value(text: str) -> str | int:
    if text == "global":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"pool is 'global' or an integer P, got {text!r}")


def output_file(text: str) -> str:
    """A file the command will write: its folder must exist now, not only when the work is done."""
    from pathlib import Path

    folder = Path(text).expanduser().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    from nas.files import check_writable

    try:  # a read-only place is said now, not after all the work
        check_writable(folder, "a file")
        if Path(text).exists() and not os.access(text, os.W_OK):
            raise NasError(f"{text} is read-only")
    except NasError as e:
        raise argparse.ArgumentTypeError(str(e).rstrip(".")) from None
    return text


def add_data_flags(p: argparse.ArgumentParser, default: str | None = "cifar10") -> None:
    g = p.add_argument_group("data")
    shown = default or "the one the study was searched on"
    g.add_argument("--dataset", default=default,
                   help=f"cifar10, cifar100, imagefolder:PATH or synthetic[:N] (default: {shown})")  # fmt: skip
    g.add_argument("--data-dir", help="where torchvision's CIFAR files are or go (default: ~/.cache/nas)")


def add_precision_flag(p: argparse.ArgumentParser) -> None:
    from nas.recipe import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (the default unless the recipe says otherwise): bf16 on GPUs with native bf16 "
                   "(compute capability 8.0+), fp16 with loss scaling on older GPUs; on the CPU bf16 where it is "
                   "native (AVX512-BF16, AMX), else fp32; fp32 means no TF32")  # fmt: skip


def add_arch_flags(p: argparse.ArgumentParser) -> None:
    """ArchSpec as flags (one name per field: --stem-kernel is stem_kernel)."""
    g = p.add_argument_group("architecture")
    g.add_argument("--blocks", type=int_list, help="blocks per stage, e.g. 3,5,3")
    g.add_argument("--channels", type=int_list, help="channels per stage, e.g. 64,128,256")
    g.add_argument("--stem-channels", type=int, help="stem width (default: the first stage's)")
    g.add_argument("--stem-kernel", type=int, help="stem kernel F0 (odd)")
    g.add_argument("--kernel", type=int_list, help="block kernel F (odd), one for all stages or one per stage")
    g.add_argument("--skip-kernel", type=int, help="skip-connection kernel K (odd)")
    g.add_argument("--pool", type=pool_value, help="'global' or P (P x P average pool over the final map)")
    g.add_argument("--block", choices=list(BLOCKS), help="; ".join(f"{b.name}: {b.about}" for b in BLOCKS.values()))
    g.add_argument("--expansion", type=int, help="width ratio of a block's wide and narrow parts (bottleneck: "
                   "channels / narrow width; mbconv: wide width / input width); default " +
                   ", ".join(f"{b.name} {b.fields['expansion']}" for b in BLOCKS.values() if "expansion" in b.fields))  # fmt: skip
    g.add_argument("--se", type=int, help="squeeze-and-excitation ratio (0 = off)")
    g.add_argument("--classes", type=int, help="classes of the output layer (default 10)")
    g.add_argument("--image-size", type=int, help="input image side in pixels (default 32)")
    g.add_argument("--in-channels", type=int, help="input channels (default 3)")


ARCH_FLAGS = ("blocks", "channels", "stem_channels", "stem_kernel", "kernel", "skip_kernel", "pool", "block",
              "expansion", "se", "classes", "image_size", "in_channels")  # fmt: skip


def arch_from_flags(args: argparse.Namespace, base: dict[str, Any] | None = None):
    """An ArchSpec from the flags given, over `base` (a preset's fields) when there is one."""
    from nas.arch import ArchSpec

    d = dict(base or {})
    given = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k, None) is not None}
    if "block" in given:  # another block than the preset's: drop the preset's fields it does not read
        d = {k: v for k, v in d.items() if given["block"] not in BLOCKS or block_reads(given["block"], k)}
    d.update(given)
    if isinstance(d.get("kernel"), list) and len(d["kernel"]) == 1:
        d["kernel"] = d["kernel"][0]
    if "blocks" not in d or "channels" not in d:
        raise NasError("give --blocks and --channels (e.g. --blocks 3,5,3 --channels 64,128,256) or --preset NAME.")
    return ArchSpec.from_dict(d)


# ------------------------------------------------------------------------------------------ count


def _add_count(sub: Any) -> None:
    p = sub.add_parser(
        "count",
        help="parameters and MACs of an architecture, a preset, or a whole search space",
        description="Count parameters and multiply-accumulates in closed form (no model is built).",
    )
    add_arch_flags(p)
    p.add_argument("--preset", help="a preset from search_spaces/presets/ (flags given override its fields)")
    p.add_argument("--space", help="sample this search space instead and report the budget share")
    p.add_argument("--budget", type=parse_count, help="parameter budget, e.g. 5e6 or 5M")
    p.add_argument("--samples", type=parse_count, default=100_000, help="configurations to sample with --space")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling with --space (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_count)


def run_count(args: argparse.Namespace) -> int:
    from nas.count import count_macs, count_params, count_peak_memory

    if args.space:
        return _count_space(args)
    base = None
    if args.preset:
        from nas.space import load_preset

        _, preset_spec, _ = load_preset(args.preset)
        base = preset_spec.to_dict()
    spec = arch_from_flags(args, base)
    params, macs, ram = count_params(spec), count_macs(spec), count_peak_memory(spec)
    out: dict[str, Any] = {"params": params, "macs": macs, "peak_ram_int8": ram}
    if args.budget:
        out["budget"] = args.budget
        out["within_budget"] = params <= args.budget
    out["spec"] = spec.to_dict()
    if args.json:
        print(json.dumps(out))
        return 0
    print(spec.describe())
    print(f"parameters  {params:>15,}")
    print(f"MACs        {macs:>15,}  per image, forward ({macs / 1e6:,.1f} M)")
    print(f"peak RAM    {ram:>15,}  bytes of activations in int8, one image ({ram / 1024:,.1f} KiB; x4 in float32)")
    if args.budget:
        verdict = "within" if params <= args.budget else "OVER"
        print(f"budget      {args.budget:>15,}  {verdict} ({params / args.budget:.1%})")
    return 0


def _count_space(args: argparse.Namespace) -> int:
    from nas.space import load_space, survey

    if not args.budget:
        raise NasError("--space needs --budget (e.g. --budget 5e6).")
    space = load_space(args.space)
    data = {k: getattr(args, k) for k in ("classes", "image_size", "in_channels") if getattr(args, k) is not None}
    s = survey(space, args.budget, args.samples, args.seed, **data)
    if args.json:
        print(json.dumps({"space": str(space.path), **s}))
        return 0
    print(f"space        {space.path}")
    print(f"samples      {s['samples']:,} (seed {args.seed}, uniform random)")
    print(f"budget       {s['budget']:,}: {s['within_budget']:.1%} of samples within")
    print(f"smallest     {s['smallest']:,} parameters")
    from nas.progress import fmt_params

    print("parameters   " + "  ".join(f"{k} {fmt_params(v)}" for k, v in s["percentiles"].items()))
    if s["macs_within_budget"]:
        print("MACs         " + "  ".join(f"{k} {v / 1e6:,.1f}M" for k, v in s["macs_within_budget"].items())
              + "  per image, of those within budget")  # fmt: skip
    print(f"speed        {s['specs_per_s']:,.0f} specs/s sampled and counted; "
          f"count_params alone {s['count_params_per_s']:,.0f} calls/s")  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------------ bench


def _add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="time the training engine on one architecture (and optionally check its accuracy)",
        description="Per-epoch time, images/s, TFLOP/s, first-epoch overhead and peak memory of training "
        "one architecture on the whole training set; --accuracy-run N adds a short one-cycle run's test accuracy.",
    )
    add_arch_flags(p)
    add_data_flags(p)
    p.add_argument("--preset", help="a preset (default: resnet24 unless --blocks/--channels are given)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the speed run (default 5)")
    p.add_argument("--batch-size", type=int, default=512, help="training batch size (default 512)")
    p.add_argument("--accuracy-run", type=int, default=0, metavar="N", help="then train N epochs and test")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (its compile time counts)")
    add_precision_flag(p)
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when there is one)")
    p.add_argument("--record", metavar="PATH", type=output_file, help="append the result to this Markdown file "
                   "(e.g. benchmarks/RESULTS.md)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from nas import bench
    from nas.recipe import Recipe
    from nas.space import load_preset

    if args.epochs < 1 or args.batch_size < 1 or args.accuracy_run < 0:
        raise NasError("--epochs and --batch-size must be positive and --accuracy-run not negative.")
    recipe, base = Recipe(), None
    if args.preset or args.blocks is None:
        _, spec, recipe = load_preset(args.preset or "resnet24")
        base = spec.to_dict()
    spec = arch_from_flags(args, base)
    recipe = replace(recipe, batch_size=args.batch_size, precision=args.precision or recipe.precision)
    result = bench.run_bench(spec.to_dict(), recipe, args.dataset, args.data_dir, epochs=args.epochs,
                             accuracy_epochs=args.accuracy_run, compile=args.compile, device=args.device)  # fmt: skip
    print(json.dumps(result) if args.json else bench.summary(result))
    if args.record:
        bench.record(result, Path(args.record), "nas " + " ".join(sys.argv[1:]))
    return 0


# ----------------------------------------------------------------------------------------- search


def _add_search(sub: Any) -> None:
    from pathlib import Path

    from nas.score import DESCRIPTIONS, HISTORY_SCORES
    from nas.search import SearchConfig as D  # its defaults are the flags' defaults
    from nas.study import PRUNERS, SAMPLERS, budget_label

    p = sub.add_parser(
        "search",
        help="search the space for the most accurate configuration within the budget",
        description="Budget-constrained Optuna search: over-budget proposals are rejected by the closed-form "
        "counter before anything is built; the rest are scored by short proxy trainings on a validation split. "
        "Re-running the same command resumes the study.",
    )
    p.add_argument("--budget", type=parse_count, default=D.budget,
                   help=f"parameter budget: 5e6, 5000000 or 5M (default {budget_label(D.budget)})")
    p.add_argument("--max-macs", type=parse_count, default=D.max_macs, metavar="MACS",
                   help="also reject proposals over this many multiply-accumulates per image, e.g. 25M (default: no limit)")
    p.add_argument("--max-ram", type=parse_count, default=D.max_ram, metavar="BYTES",
                   help="also reject proposals whose peak activation memory in int8 (one image's inference) is over "
                        "this many bytes, e.g. 64k (default: no limit)")  # fmt: skip
    p.add_argument("--trials", type=int, default=D.trials,
                   help="trained trials wanted, all workers together; rejected proposals do not count (default %(default)s)")
    p.add_argument("--space", default=D.space, help=f"search-space YAML or its name (default: search_spaces/{Path(D.space).name})")
    p.add_argument("--study", default=D.study, help="study name (default: <space>-<dataset>-<budget>)")
    p.add_argument("--storage", default=D.storage, help="Optuna storage URL (default sqlite:///studies/<study>.db); "
                   "postgresql://..., mysql://..., or journal:PATH for many processes on one machine")
    add_data_flags(p, default=D.dataset)
    p.add_argument("--sampler", choices=SAMPLERS, default=D.sampler,
                   help="how configurations are proposed (default %(default)s; tpe is the only one that learns from "
                   "rejected proposals: with gp or nsga2 use --fill-budget)")  # fmt: skip
    p.add_argument("--pruner", choices=PRUNERS, default=D.pruner,
                   help="how unpromising proxy trainings are stopped early, from 60%% of the proxy's epochs on "
                        "(default %(default)s)")
    p.add_argument("--score", choices=HISTORY_SCORES, default=D.score,
                   help="what a proxy training is turned into, the objective and the pruner's signal: "
                   + "; ".join(f"{k}, {v}" for k, v in DESCRIPTIONS.items()) + " (default %(default)s)")
    p.add_argument("--proxy-epochs", type=int, default=D.proxy_epochs, help="epochs of each proxy training (default %(default)s)")
    p.add_argument("--proxy-subset", type=float, default=D.proxy_subset,
                   help="fraction of the training split proxies train on (default %(default)s: all of it)")
    p.add_argument("--val-size", type=int, default=D.val_size, help="validation images carved from the training set (default 10%%)")
    p.add_argument("--split-seed", type=int, default=D.split_seed, help="seed of the validation split (default %(default)s)")
    p.add_argument("--fill-budget", action="store_true", default=D.fill_budget,
                   help="scale each proposal's widths to use 90-100%% of the budget")
    p.add_argument("--gpus", help="GPU indices, e.g. 0,1 (default: every visible GPU; 'cpu' for the CPU)")
    p.add_argument("--jobs-per-gpu", type=int, metavar="J",
                   help="concurrent trials per GPU (default 2); with --gpus cpu, worker processes sharing the cores, "
                   "one thread each on a machine with J cores (default 1; each holds its own copy of torch and the "
                   "data, about 1.3 GB)")
    add_precision_flag(p)
    p.add_argument("--compile", action="store_true", default=D.compile, help="torch.compile each trial's model "
                   "(compile time counts in the trial's time; rarely pays for short proxies)")  # fmt: skip
    p.add_argument("--seed", type=seed_value, default=D.seed,
                   help="sampler seed (default: drawn at random and printed; a resumed run and each worker draw their "
                   "own reproducible stream from it)")  # fmt: skip
    p.add_argument("--timeout", type=parse_duration, default=D.timeout, help="start no trial after this long: 2h, 30m, 90s")
    p.add_argument("--record", metavar="PATH", type=output_file, help="append the run's summary to this Markdown file")
    p.set_defaults(run=run_search)


def search_devices(gpus: str | None, jobs_per_gpu: int | None) -> tuple[str, ...]:
    """One entry per worker process. The CPU defaults to one worker (it picks its own thread count);
    several split the cores among them, which beats one worker's threads on a busy or small CPU
    (benchmarks/RESULTS.md, the CPU engine) at a copy of torch and the data each."""
    import torch

    if jobs_per_gpu is not None and jobs_per_gpu < 1:
        raise NasError("--jobs-per-gpu must be at least 1.")
    if gpus == "cpu" or (gpus is None and not torch.cuda.is_available()):
        return ("cpu",) * (jobs_per_gpu or 1)
    if not torch.cuda.is_available():
        raise NasError(f"--gpus {gpus}: no CUDA device is visible here; use --gpus cpu.")
    count = torch.cuda.device_count()
    ids = list(range(count)) if gpus is None else int_list(gpus)
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise NasError(f"--gpus {gpus}: GPU {bad[0]} does not exist (this machine has {count}).")
    return tuple(f"cuda:{i}" for i in ids for _ in range(jobs_per_gpu or 2))


def run_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.progress import Progress
    from nas.score import label
    from nas.search import SearchConfig
    from nas.search import run_search as search

    if args.seed is None:  # drawn and printed, so that a run worth repeating can be
        import secrets

        args.seed = secrets.randbelow(2**31)
    cfg = SearchConfig(**{f.name: getattr(args, f.name) for f in fields(SearchConfig) if f.name != "devices"},
                       devices=search_devices(args.gpus, args.jobs_per_gpu))  # fmt: skip
    progress = Progress()
    try:
        study = search(cfg, progress)
    except KeyboardInterrupt:
        progress.close()
        if progress.study is not None:  # what finished before the Ctrl-C, and the commands to go on
            with contextlib.suppress(Exception, KeyboardInterrupt):  # a second Ctrl-C or a busy database: the line below still says it
                progress.summary(progress.study)
        print("\nnas search: interrupted; the running trials were marked failed.\nRun the same command to resume.",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        progress.close()
    summary = progress.summary(study)
    from nas.report import write_note

    write_note(study)
    if args.record:
        from nas.bench import append_record

        s = summary
        passed = "no proposal yet" if s["passed"] is None else f"{s['passed']:.1%} of {s['proposals']} proposals, " + (
            f"{s['passed_after_50']:.1%} after the first 50" if s["passed_after_50"] is not None
            else "too few for a share after the first 50")  # fmt: skip
        best = s["top"][0] if s["top"] else None
        append_record(Path(args.record), _device_of(cfg.devices), "nas " + " ".join(sys.argv[1:]), [
            ("wall time", f"{s['wall_seconds'] / 60:.1f} min for {s['trained']} trained trials"),
            ("trials per hour", f"{s['trials_per_hour'] or 0:.0f}"),
            ("GPU busy", s["gpu_busy_text"] or "no GPU in use"),
            ("passed the budget check", passed),
            ("best trial", f"#{best['number']}: {label(cfg.score)} {best['score']:.4f}, {best['arch']} | {best['recipe']}"
                           if best else "none"),
        ])  # fmt: skip
    return 0


def _device_of(devices: tuple[str, ...]) -> str:
    import torch

    from nas.bench import device_name

    names = sorted({device_name(torch.device(d)) for d in devices})
    return f"{len(set(devices))} x " + ", ".join(names) if len(set(devices)) > 1 else names[0]


# ------------------------------------------------------------------------- retrain, report, predict


def add_study_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--study", help="study name (default: the only study in studies/; where there are several, "
                   "nas lists them and asks)")  # fmt: skip
    g.add_argument("--storage", help="Optuna storage URL or journal file (default: studies/<study>.db, or the file "
                   "in studies/ that holds the study)")  # fmt: skip


def open_study(args: argparse.Namespace, writes: bool = False):
    """The study --study/--storage name and its storage URL, after a line saying which it is. A
    command that `writes` to the study is refused now where the storage is read-only, not after its work."""
    from nas.study import check_storage_writable, load_study, shown_url, study_url

    study = load_study(args.storage, args.study)
    url = study_url(study)
    only = " (the only one in studies/)" if args.study is None and args.storage is None else ""
    print(f"study {study.study_name} in {shown_url(url)}{only}")
    if writes:
        check_storage_writable(url)
    return study, url


def _add_retrain(sub: Any) -> None:
    p = sub.add_parser(
        "retrain",
        help="train a trial (or a preset) in full and test it",
        description="Rebuild a trial's exact architecture and recipe, train it on training + validation images "
        "with the full schedule, test it (plain and flip-TTA) and store the model, curves and results.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="the trial's number")
    which.add_argument("--top", type=int, metavar="K", help="the K best trials, one after another")
    which.add_argument("--preset", help="a preset from search_spaces/presets/, stored in the study under its name")
    p.add_argument("--fit-budget", action="store_true",
                   help="with --preset: scale its widths to the study's parameter budget and MAC limit, stored as "
                   "preset-NAME-fit: the hand design at the search's size, which nas report sets the best against")
    add_study_flags(p)
    add_data_flags(p, default=None)
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's, 200 in the default space)")
    p.add_argument("--seed", type=seed_value, help="seed (default: the recipe's); another seed is stored beside the "
                   "first, as trial-N-seedS")
    p.add_argument("--out", help="output folder (default studies/<study>/trial-N)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an interrupted retrain from its last checkpoint (written every 5 epochs); "
                       "where there is none, start")
    again.add_argument("--replace", action="store_true",
                       help="retrain again what was retrained before, replacing its result and files")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when there is one)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on long runs)")
    add_precision_flag(p)
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible on a GPU, so that --resume "
                   "continues exactly (no cuDNN autotuning, deterministic kernels: slower)")  # fmt: skip
    p.set_defaults(run=run_retrain)


def run_retrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas import retrain as rt
    from nas.data import load_dataset
    from nas.liveness import terminate_as_interrupt
    from nas.report import write_note
    from nas.recipe import Recipe
    from nas.space import load_preset
    from nas.study import dashboard_command, trial_recipe

    terminate_as_interrupt()  # kill, a scheduler's stop: said and resumable like Ctrl-C (which a background job ignores)
    if args.epochs is not None and args.epochs < 1:
        raise NasError("--epochs must be at least 1.")
    if args.top is not None and args.top < 1:
        raise NasError(f"--top K needs K of at least 1, got {args.top}.")
    if args.out and args.top:
        raise NasError("--out names one folder; use it with --trial or --preset, not --top.")
    study, url = open_study(args, writes=True)
    if args.trial is not None:
        rt.find_trial(study, args.trial)  # an unknown trial fails before any data is loaded
    if args.fit_budget and not args.preset:
        raise NasError("--fit-budget scales a preset to the study's limits: use it with --preset.")
    fit = rt.study_limits(study) if args.fit_budget else None
    numbers = [args.trial] if args.trial is not None else rt.best_trials(study, args.top) if args.top else []
    if numbers:
        names = [rt.seeded_name(f"trial-{n}", args.seed, (trial_recipe(rt.find_trial(study, n)) or {}).get("seed", Recipe.seed))
                 for n in numbers]  # fmt: skip
    else:
        preset, _, recipe = load_preset(args.preset)
        names = [rt.seeded_name(rt.preset_name(preset, fitted=bool(fit)), args.seed, recipe.seed)]
    outs = {name: Path(args.out) if args.out else rt.default_out(study, name) for name in names}
    # Before any data is loaded: what would be skipped, and what would throw work away unasked.
    todo = [name for name in names if rt.start_epoch(study, name, outs[name], resume=args.resume,
                                                        replace=args.replace) is not None]  # fmt: skip
    for name in names:
        if name not in todo:
            print(rt.kept(study, name))
    for name in todo:
        rt.check_outputs(study, outs[name])
    if todo:
        dataset = args.dataset or study.user_attrs.get("dataset")
        if not dataset:
            raise NasError(f"study {study.study_name!r} records no dataset; pass --dataset.")
        data = load_dataset(dataset, args.data_dir)
        for name in todo:
            target = rt.preset_target(args.preset, data.shape, fit) if args.preset else \
                rt.trial_target(study, int(rt.base_name(name).split("-", 1)[1]), data.shape)  # fmt: skip
            rt.retrain(study, rt.seeded(target, args.seed), data, epochs=args.epochs, out=outs[name], resume=args.resume,
                       replace_earlier=args.replace, device=args.device, compile=args.compile,
                       precision=args.precision, deterministic=args.deterministic)  # fmt: skip
            write_note(study)
    print(f"browse the results: {dashboard_command(url, study.study_name)}")
    return 0


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="leaderboard, figures and proxy fidelity of a study",
        description="Print the leaderboard; write it as CSV and Markdown with plotly figures (accuracy vs "
        "parameters with the budget and the Pareto front, history, importances, learning curves) and an index.html. "
        "It only reads the study, unless --note.",
    )
    add_study_flags(p)
    p.add_argument("--out", help="output folder (default: report/ in the study's folder beside its storage)")
    p.add_argument("--note", action="store_true", help="also refresh what optuna-dashboard shows (the study note, "
                   "the retrained trials' notes, the study-page figures) where it changed; nas search and nas retrain "
                   "refresh it as they go")  # fmt: skip
    p.set_defaults(run=run_report)


def terminal_width() -> int:
    """The terminal's width, or COLUMNS where set; a pipe or a file gets 120 columns."""
    import shutil

    return shutil.get_terminal_size().columns if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120


def run_report(args: argparse.Namespace) -> int:
    import textwrap
    from pathlib import Path

    from nas.progress import shell_lines
    from nas.report import console_table, fidelity_line, legend, report, write_note
    from nas.study import dashboard_command, study_score

    study, url = open_study(args, writes=args.note)  # a report reads; --note writes the dashboard's notes
    r = report(study, Path(args.out) if args.out else None)
    df = r["leaderboard"]
    width = terminal_width()
    say = lambda text, file=sys.stdout: print(textwrap.fill(text, width, break_on_hyphens=False), file=file)  # noqa: E731
    if df.empty:
        say(f"study {study.study_name!r} has no trained trial yet.")
    else:
        table = console_table(df.head(20), width)  # leaderboard.csv has every field in full
        print(table)
        if len(df) > 20:
            say(f"... and {len(df) - 20} more rows in leaderboard.csv")
        say(legend(table.splitlines()[0].split(), study_score(study)))
    if r["control"]:
        say(r["control"])
    if r["fidelity"]:
        f = r["fidelity"]
        say(f"proxy fidelity over {f['trials']} retrained trials: {fidelity_line(f)}")
        for warning in f["warnings"]:
            say(f"warning: {warning}", file=sys.stderr)
    for what, why in r["skipped"].items():  # a command in it goes whole on a line of its own, to paste
        why, _, command = why.partition(": nas ")
        say(f"no {what}: {why}" + (":" if command else ""))
        if command:
            print(shell_lines(f"  nas {command}", width))
    say(f"wrote {len(r['figures']) + 3} files to {r['dir']}; open {Path(r['dir']) / 'index.html'}")
    if args.note:
        say("dashboard note and figures: " + ("refreshed where they changed" if write_note(study) else
                                               "optuna-dashboard is not installed (pip install -e '.[dashboard]')"))  # fmt: skip
    print("browse the study:")
    print(shell_lines(f"  {dashboard_command(url, study.study_name)}", width))
    return 0


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="label a folder of images with a retrained trial's model",
        description="Write an ID,Label,Confidence CSV (ID: the file stem, Label: the class name, Confidence: its "
        "probability) for every image under --images.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="a retrained trial's number")
    which.add_argument("--model", help="a model.pt written by nas retrain")
    add_study_flags(p)
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", default="predictions.csv", type=output_file, help="CSV to write (default predictions.csv)")
    p.add_argument("--tta", action="store_true", help="average with the mirror image's prediction")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when there is one)")
    p.set_defaults(run=run_predict)


def _add_export(sub: Any) -> None:
    from nas.export import CALIBRATION_IMAGES

    p = sub.add_parser(
        "export",
        help="write a retrained trial's (or preset's) model as ONNX, and int8 with --int8",
        description="Write model.onnx (BatchNorm folded; uint8 images in, normalised inside the graph; logits out) "
        "beside the retrain's model.pt, checked against torch on the test set; with --int8 also model.int8.onnx, "
        "onnxruntime's static quantization calibrated on training images, with its test accuracy.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="a retrained trial's number")
    which.add_argument("--preset", help="a retrained preset's name")
    p.add_argument("--fit-budget", action="store_true", help="with --preset: its retrain scaled to the budget")
    p.add_argument("--seed", type=seed_value, help="the retrain of this seed, where several were retrained")
    add_study_flags(p)
    add_data_flags(p, default=None)
    p.add_argument("--int8", action="store_true", help="also quantize to int8 and report its test accuracy")
    p.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help="training images the int8 ranges are calibrated on (default %(default)s)")
    p.add_argument("--out", help="output folder (default: the retrain's, beside model.pt)")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.data import load_dataset
    from nas.export import describe, export
    from nas.recipe import Recipe
    from nas.retrain import find_trial, preset_name, retrains, seeded_name
    from nas.space import load_preset
    from nas.study import shown_url, trial_recipe

    study, url = open_study(args)
    if args.fit_budget and not args.preset:
        raise NasError("--fit-budget names a preset's scaled retrain: use it with --preset.")
    if args.trial is not None:
        recipe_seed = (trial_recipe(find_trial(study, args.trial)) or {}).get("seed", Recipe.seed)
        name, which = f"trial-{args.trial}", f"--trial {args.trial}"
    else:
        preset, _, recipe = load_preset(args.preset)
        name, which, recipe_seed = preset_name(preset, fitted=args.fit_budget), f"--preset {preset}", recipe.seed
        which += " --fit-budget" * args.fit_budget
    name = seeded_name(name, args.seed, recipe_seed)  # the retrain's own name, as nas retrain stored it
    which += f" --seed {args.seed}" if name.endswith(f"-seed{args.seed}") else ""
    done = retrains(study).get(name)
    if not done:
        flags = "".join(f" --{k} {v}" for k, v in (("study", args.study), ("storage", args.storage and shown_url(args.storage))) if v)
        raise NasError(f"{name} has not been retrained in study {study.study_name!r}; run: nas retrain {which}{flags}")
    dataset = args.dataset or study.user_attrs.get("dataset")
    if not dataset:
        raise NasError(f"study {study.study_name!r} records no dataset; pass --dataset.")
    data = load_dataset(dataset, args.data_dir)
    out = Path(args.out) if args.out else Path(done["dir"])
    r = export(study, name, Path(done["dir"]) / "model.pt", data, out, int8=args.int8, calibration=args.calibration)
    print(f"{name}: {describe(r)}")
    print(f"  model.onnx: every logit within {r['logit_tolerance']:.2g} of torch's on {r['checked_images']:,} test images "
          f"(largest difference {r['max_logit_diff']:.2g}), top-1 differs on {r['top1_disagreements']}; input {r['input']}")
    if args.int8:
        print(f"  model.int8.onnx: calibrated on {r['calibration_images']} training images; test accuracy "
              f"{r['test_acc_int8']:.4f} against {r['test_acc_onnx']:.4f} in float")  # fmt: skip
    print(f"  peak activation memory {r['peak_ram_int8']:,} bytes in int8 (closed form; the graph walk: "
          f"{r['peak_ram_measured_int8']:,}) -> {out}")  # fmt: skip
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.predict import predict_folder

    model = Path(args.model) if args.model else retrained_model(args)
    n, skipped = predict_folder(model, Path(args.images), Path(args.out), tta=args.tta, device=args.device)
    if skipped:
        kinds = sorted({p.suffix or "(no suffix)" for p in skipped})
        one = len(skipped) == 1
        print(f"skipped {len(skipped)} file{'' if one else 's'} that {'is not an image' if one else 'are not images'} "
              f"({', '.join(kinds)}), e.g. {skipped[0]}")  # fmt: skip
    print(f"wrote {n} predictions to {args.out}")
    return 0


def retrained_model(args: argparse.Namespace):
    """The model.pt of --trial's retrain, wherever this machine keeps it; or why there is none and what to run."""
    from nas.retrain import default_out, find_trial, kept_file, retrains
    from nas.study import REJECTED, study_flags, trial_arch

    study, url = open_study(args)
    trial, flags, name = find_trial(study, args.trial), study_flags(study.study_name, url), f"trial-{args.trial}"
    done = retrains(study).get(name)
    if not done:
        reason = trial.user_attrs.get("reason")
        if reason in REJECTED or trial_arch(trial) is None:
            raise NasError(f"trial {args.trial} was never trained ({reason or trial.state.name}), so it has no model; "
                           f"nas trials{flags} lists the trained ones.")  # fmt: skip
        raise NasError(f"trial {args.trial} has not been retrained; run: nas retrain --trial {args.trial}{flags}")
    model = kept_file(study, name, "model.pt")
    if model is None:
        raise NasError(f"trial {args.trial}'s retrain kept no model.pt here (not in {done['dir']}, "
                       f"{default_out(study, name)} or the study's artifacts): the study was handed on without it; "
                       f"train it again here: nas retrain --trial {args.trial} --replace{flags}")  # fmt: skip
    return model


# ---------------------------------------------------------------------------------- studies, trials


def _add_studies(sub: Any) -> None:
    p = sub.add_parser("studies", help="the studies in studies/ (or in --storage): what each searched, how far it got",
                       description="List studies with their storage, budget, trained trials, best proxy score and "
                       "retrains: the names and --storage values the other commands take.")  # fmt: skip
    p.add_argument("--storage", help="list the studies in this storage instead of the files in studies/")
    p.set_defaults(run=run_studies)


def run_studies(args: argparse.Namespace) -> int:
    import optuna

    from nas.progress import trained
    from nas.retrain import retrains
    from nas.study import STUDIES_DIR, budget_label, found_studies, open_existing, open_storage, study_flags

    if args.storage:
        storage = open_existing(args.storage)
        found = [(s.study_name, args.storage) for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    else:
        found = found_studies()
    where = args.storage or f"{STUDIES_DIR}/"
    if not found:
        print(f"no study in {where}; nas search makes one.")
        return 0
    rows = [("study", "trained", "best", "budget", "retrained", "open with")]
    for name, url in found:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
        done = trained(study.get_trials(deepcopy=False))
        scores = [t.value for t in done if t.value is not None and t.state.name == "COMPLETE"]
        budget = study.user_attrs.get("budget")
        rows.append((name, str(len(done)), f"{max(scores):.4f}" if scores else "", budget_label(budget) if budget else "",
                     str(len(retrains(study))), study_flags(name, url).strip()))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.rjust(w) if 0 < i < 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + "  " + r[-1])
    print(f"{len(found)} stud{'y' if len(found) == 1 else 'ies'} in {where}; nas trials --study NAME lists one's trials")
    return 0


def _add_trials(sub: Any) -> None:
    p = sub.add_parser("trials", help="every trial of a study: state, why it ended, score, size",
                       description="One line per trial, rejected proposals included: its state, the reason it ended as "
                       "it did, its proxy score (the last epoch's, where pruned), parameters and architecture.")  # fmt: skip
    add_study_flags(p)
    p.set_defaults(run=run_trials)


def run_trials(args: argparse.Namespace) -> int:
    from nas.progress import arch_brief, fmt_params
    from nas.study import study_metric

    study, _ = open_study(args)
    width = terminal_width()
    for t in study.get_trials(deepcopy=False):
        a, steps = t.user_attrs, t.intermediate_values
        score = f"{t.value:.4f}" if t.value is not None and t.state.name == "COMPLETE" else (
            f"{steps[max(steps)]:.4f}@{max(steps)}" if steps else "")  # fmt: skip
        params = fmt_params(a["params"]) if "params" in a else ""
        line = f"#{t.number:<4} {t.state.name.lower():<8} {a.get('reason', ''):<12} {score:>11} {params:>7}  "
        arch = arch_brief(t) if "params" in a and a.get("reason") not in ("over_budget", "over_macs", "underfilled") else ""
        room = max(10, width - len(line))
        print(line + (arch if len(arch) <= room else arch[: room - 1] + "…"))
    print(f"score: {study_metric(study)} (@N: the last epoch a pruned or failed trial reached); nas report ranks them")
    return 0
