"""What a running search shows: a line per trained trial; on a terminal, a live footer (trained
k/N, rejected, best so far, trials per hour, ETA, and each running trial with its epoch) fitted to
the terminal's width by rich; in a log, a status line per trained trial; and the final summary.
Everything is read back from the study, so one display serves one worker or many."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.score import label, metric_name
from nas.study import (FILL_MIN, REJECTED, counts, cut_short, dashboard_command, repeat, shown_url, storage_url,
                       study_flags, trial_arch, trial_recipe, trial_seconds)  # fmt: skip

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
REFRESH_S = 1.0  # the live footer reads the study this often
MAX_RUNNING_LINES = 8
REJECTION_WORDS = {"over_budget": "over budget", "over_macs": "over the MAC limit", "over_ram": "over the RAM limit",
                   "underfilled": f"under {FILL_MIN:.0%} of the budget", "invalid": "invalid"}  # fmt: skip


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10**6 else f"{n / 1e3:.1f}k"


def recipe_brief(t: FrozenTrial) -> str:
    from nas.recipe import Recipe

    r = trial_recipe(t)
    return Recipe.from_dict(r).describe() if r else "?"


def arch_brief(t: FrozenTrial) -> str:
    from nas.arch import ArchSpec

    a = trial_arch(t)
    return ArchSpec.from_dict(a).describe() if a else "?"


def trained(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in FINISHED and counts(t)]


def rejected(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("reason") in REJECTED]


def repeats(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Proposals of a configuration trained before: they take its score and train nothing."""
    return [t for t in trials if repeat(t)]


def rejected_words(trials: list[FrozenTrial]) -> str:
    """'7 proposals rejected before training (6 over budget, 1 under 90% of it)'."""
    out = rejected(trials)
    by = {w: sum(t.user_attrs["reason"] == r for t in out) for r, w in REJECTION_WORDS.items()}
    kinds = [(w, n) for w, n in by.items() if n]
    detail = kinds[0][0] if len(kinds) == 1 else ", ".join(f"{n} {w}" for w, n in kinds)
    return f"{len(out)} proposal{'s' * (len(out) != 1)} rejected before training" + (f" ({detail})" if detail else "")


def cut_short_words(trials: list[FrozenTrial]) -> str:
    """'; 2 cut short (1 interrupted, 1 stale) and their slots trained again', or ''."""
    out = [t.user_attrs["reason"] for t in trials if cut_short(t)]
    if not out:
        return ""
    kinds = ", ".join(f"{out.count(r)} {r}" for r in dict.fromkeys(out))
    return f"; {len(out)} cut short ({kinds}), {'its slot' if len(out) == 1 else 'their slots'} freed for another"


def budget_shares(trials: list[FrozenTrial]) -> tuple[float | None, float | None]:
    """Share of proposals that passed the budget check (not rejected): over all, and after the first 50."""
    proposals = sorted((t for t in trials if "params" in t.user_attrs or t.user_attrs.get("reason") == "invalid"),
                       key=lambda t: t.number)  # fmt: skip
    passed = [t.user_attrs.get("reason") not in REJECTED for t in proposals]
    share = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return share(passed), share(passed[50:])


def proxy_words(study: optuna.Study, proxy_epochs: int) -> str:
    """What a proxy training is, in numbers: 'each trial trains 5 epochs on 900 images and is
    scored on 100 held-out validation images'."""
    split = study.user_attrs.get("split", {})
    n = lambda key: f"{split[key]:,}" if isinstance(split.get(key), int) else "?"  # noqa: E731
    part = f" ({split['subset']:.0%} of the training split)" if split.get("subset", 1) < 1 else ""
    return (f"each trial trains {proxy_epochs} epochs on {n('train_size')} images{part} and is scored on "
            f"{n('val_size')} held-out validation images")  # fmt: skip


class GpuMonitor:
    """Samples the busy share of the GPUs in use once a second in a daemon thread: NVML's
    utilization, the share of time in which a kernel ran on the GPU, whichever process launched it
    (two jobs on one GPU are one GPU's time, not two). Only samples from `since` on count (set by
    `count_from`, when the first trial trains): spawning the workers, their imports and the data's
    loading come before and would make a short search read low. `busy()` is None where it cannot be
    measured, and `unavailable` says why (nvidia-ml-py missing, NVML without a driver)."""

    def __init__(self, devices: tuple[str, ...], interval: float = 1.0):
        self.samples: list[tuple[float, float]] = []  # (time.time(), busy share)
        self.since: float | None = None
        self.indices = sorted({int(d.split(":")[1]) if ":" in d else 0 for d in devices if d.startswith("cuda")})
        self.unavailable = "" if self.indices else "no GPU in use"
        self._stop = threading.Event()
        if self.indices:
            try:
                self._read()  # once now, not kept (nothing runs yet): a missing NVML is known at once
            except Exception as e:
                self.unavailable = _nvml_problem(e)
            else:
                threading.Thread(target=self._run, args=(interval,), daemon=True).start()

    def _read(self) -> float:
        import torch

        return sum(torch.cuda.utilization(i) for i in self.indices) / len(self.indices) / 100

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.samples.append((time.time(), self._read()))
            except Exception as e:  # the driver went away mid-run
                self.unavailable = _nvml_problem(e)
                return

    def count_from(self, since: float) -> None:
        self.since = since if self.since is None else min(self.since, since)

    def busy(self) -> float | None:
        counted = [v for t, v in self.samples if self.since is not None and t >= self.since]
        return sum(counted) / len(counted) if counted else None

    def describe(self) -> str:
        busy = self.busy()
        why = self.unavailable or ("no trial has trained yet" if self.since is None else "no sample yet")
        return f"{busy:.0%}" if busy is not None else f"unavailable ({why})"

    def stop(self) -> None:
        self._stop.set()


def _nvml_problem(e: Exception) -> str:
    if isinstance(e, ModuleNotFoundError):
        return "nvidia-ml-py is not installed: pip install nvidia-ml-py"
    return f"NVML: {e}"


class Progress:
    def __init__(self, out: TextIO | None = None, live: bool | None = None):
        self.out = out or sys.stdout  # looked up now, not at import: tests and tools swap sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.seen: set[int] = set()
        self.study: optuna.Study | None = None  # set by start(): what a Ctrl-C summary reads
        self.t0 = time.time()
        self.trained_before = 0
        self.cfg: Any = None
        self.monitor: GpuMonitor | None = None
        self.last_trained = -1
        self._lock = threading.RLock()
        self._console: Any = None  # a rich Console on a terminal: it wraps lines at words, at the terminal's width
        self._footer: Any = None  # rich.live.Live while the live footer shows
        self._stop = threading.Event()

    def start(self, study: optuna.Study, cfg: Any) -> None:
        self.cfg, self.t0, self.study = cfg, time.time(), study
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state in FINISHED}
        self.trained_before = self.last_trained = len(trained(trials))
        self.monitor = GpuMonitor(cfg.devices)
        if self.live:
            from rich.console import Console

            self._console = Console(file=self.out, highlight=False, markup=False, emoji=False)
        self._print(f"study {study.study_name} in {shown_url(storage_url(cfg.storage, study.study_name))}")
        seed = "no seed" if cfg.seed is None else f"seed {cfg.seed}"
        self._print(f"budget {cfg.budget:,} parameters | space {cfg.space} | data {cfg.dataset} | "
                    f"{cfg.sampler} sampler, {cfg.pruner} pruner, {seed} | {', '.join(cfg.devices)}")  # fmt: skip
        self._print(proxy_words(study, cfg.proxy_epochs))
        if self.trained_before:
            self._print(f"resuming: {self.trained_before} of {cfg.trials} trials already trained")
        if self.live:
            self._start_footer(study)

    def _start_footer(self, study: optuna.Study) -> None:
        """A footer rich redraws in place below the trial lines, read from the study every
        REFRESH_S by a daemon thread: it moves while a trial trains, not only when one ends."""
        from rich.live import Live

        self._footer = Live(console=self._console, auto_refresh=False, transient=True)
        self._footer.start()
        self.update(study)

        def poll() -> None:
            while not self._stop.wait(REFRESH_S):
                with self._lock, contextlib.suppress(Exception):  # a busy database: the next refresh will do
                    if self._footer is not None:  # not closed meanwhile
                        self.update(study)

        threading.Thread(target=poll, daemon=True).start()

    def close(self) -> None:
        """Stop the live footer (the final summary, Ctrl-C and errors all pass here)."""
        self._stop.set()
        with self._lock:
            if self._footer is not None:
                self._footer.stop()
                self._footer = None

    def update(self, study: optuna.Study) -> None:
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            for t in sorted(trials, key=lambda t: t.number):
                if t.state in FINISHED and t.number not in self.seen:
                    self.seen.add(t.number)
                    if counts(t):
                        self._print(self.trial_line(t))
            done = len(trained(trials))
            if self._footer is not None:
                self._footer.update(self.footer(trials), refresh=True)
            elif not self.live and done != self.last_trained:  # a log: a status line per trained trial
                self._print(self.status_line(trials))
            self.last_trained = done

    def footer(self, trials: list[FrozenTrial]):
        """The status line (wrapped at words where the terminal is narrow), then one line per running
        trial with its epoch (cut to the terminal's width)."""
        from rich.console import Group
        from rich.text import Text

        running = sorted((t for t in trials if t.state == TrialState.RUNNING and counts(t)), key=lambda t: t.number)
        lines = [self.running_line(t) for t in running[:MAX_RUNNING_LINES]]
        if len(running) > MAX_RUNNING_LINES:
            lines.append(f"  ... and {len(running) - MAX_RUNNING_LINES} more running")
        status = Text(self.status_line(trials, with_running=False))
        return Group(status, *(Text(line, no_wrap=True, overflow="ellipsis") for line in lines))

    def running_line(self, t: FrozenTrial) -> str:
        """'  #11  epoch 3/5, val 0.6400 after 2 | 12.6k basic 1 x 24, ...': the epoch in progress."""
        done = max(t.intermediate_values, default=0)
        epoch = min(done + 1, self.cfg.proxy_epochs)
        last = f", {label(self.cfg.score)} {t.intermediate_values[done]:.4f} after {done}" if done else ""
        params = fmt_params(t.user_attrs["params"]) + " " if "params" in t.user_attrs else ""
        return f"  #{t.number:<4} epoch {epoch}/{self.cfg.proxy_epochs}{last} | {params}{arch_brief(t)}"

    def trial_line(self, t: FrozenTrial) -> str:
        """'#12   val 0.6400  12.6k  3.2s  basic 1 x 24, ... | sgd lr 0.05, ...': the outcome, size and
        time in fixed columns, then the architecture and the recipe (on a narrow terminal, the recipe
        goes below, under the architecture)."""
        a = t.user_attrs
        head = f"#{t.number:<4}"
        if t.state == TrialState.COMPLETE:
            head += f" {label(self.cfg.score)} {t.value:.4f}"
        elif t.state == TrialState.PRUNED:
            step, value = max(t.intermediate_values.items()) if t.intermediate_values else (0, float("nan"))
            head += f" pruned after epoch {step} ({label(self.cfg.score)} {value:.4f})"
        else:
            head += f" FAILED: {a.get('reason', '?')} ({a.get('error', '')})"
        seconds = trial_seconds(t)
        head += f" {fmt_params(a['params']):>6}" if "params" in a else ""
        head += f" {fmt_seconds(seconds):>5}" if seconds is not None else ""
        return f"{head}  {arch_brief(t)} | {recipe_brief(t)}"

    def watch_training(self, trials: list[FrozenTrial]) -> None:
        """The GPU busy share counts from the start of this run's first trial that trains (one that
        holds a slot: a rejected proposal never reaches the GPU)."""
        started = [t.datetime_start.timestamp() for t in trials if t.datetime_start and counts(t)]
        started = [s for s in started if s >= self.t0]
        if self.monitor and started:
            self.monitor.count_from(min(started))

    def status_line(self, trials: list[FrozenTrial], with_running: bool = True) -> str:
        cfg = self.cfg
        self.watch_training(trials)
        done = trained(trials)
        running = sum(1 for t in trials if t.state == TrialState.RUNNING and counts(t))
        rate = self.rate(done)
        again = len(repeats(trials))
        parts = [f"trained {len(done)}/{cfg.trials}", f"rejected {len(rejected(trials))}"]
        parts += [f"repeats {again}"] if again else []
        parts += [f"running {running}"] if with_running else []  # the footer lists them instead
        best = self.best(trials)
        if best:
            parts.append(f"best {best.value:.4f} (#{best.number}, {fmt_params(best.user_attrs['params'])})")
        if rate:
            eta = max(0, cfg.trials - len(done)) / rate * 3600  # running trials still take time: not 0s while one trains
            parts += [f"{rate:.0f} trials/h", f"ETA {fmt_seconds(eta)}"]
        if self.monitor and self.monitor.indices:
            parts.append(f"GPU busy {self.monitor.describe()}")
        return " | ".join(parts)

    def rate(self, done: list[FrozenTrial]) -> float | None:
        hours = (time.time() - self.t0) / 3600
        new = len(done) - self.trained_before
        return new / hours if new and hours > 0 else None

    @staticmethod
    def best(trials: list[FrozenTrial]) -> FrozenTrial | None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        return max(complete, key=lambda t: t.value) if complete else None

    def summary(self, study: optuna.Study, top: int = 5) -> dict[str, Any]:
        """The final report: printed, and returned for `--record`."""
        self.close()
        if self.monitor:
            self.monitor.stop()
        cfg, trials = self.cfg, study.get_trials(deepcopy=False)
        self.watch_training(trials)
        done = trained(trials)
        proposals = sum(1 for t in trials if "params" in t.user_attrs or t.user_attrs.get("reason") == "invalid")
        share, share_after_50 = budget_shares(trials)
        wall = time.time() - self.t0
        result = {
            "study": study.study_name,
            "storage": storage_url(cfg.storage, study.study_name),
            "trained": len(done),
            "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "failed": sum(t.state == TrialState.FAIL for t in done),
            "rejected": len(rejected(trials)),
            "repeats": len(repeats(trials)),
            "proposals": proposals,
            "passed": share,
            "passed_after_50": share_after_50,
            "wall_seconds": wall,
            "trials_per_hour": self.rate(done),
            "gpu_busy": self.monitor.busy() if self.monitor else None,
            "gpu_busy_text": self.monitor.describe() if self.monitor and self.monitor.indices else None,
            "top": [{"number": t.number, "score": t.value, "params": t.user_attrs["params"],
                     "macs": t.user_attrs["macs"], "arch": arch_brief(t), "recipe": recipe_brief(t)}
                    for t in sorted((t for t in done if t.state == TrialState.COMPLETE),
                                    key=lambda t: -t.value)[:top]],  # fmt: skip
        }
        r = result
        shares = "" if share is None else f"; {share:.0%} of {proposals} proposals passed the budget check"
        shares += f" ({share_after_50:.0%} after the first 50)" if share_after_50 is not None else ""
        rate = f", {r['trials_per_hour']:.0f} trials/h" if r["trials_per_hour"] else ""
        busy = f", GPU busy {r['gpu_busy_text']}" if r["gpu_busy_text"] else ""
        again = f"; {r['repeats']} repeat{'s' * (r['repeats'] != 1)} of trained ones, not trained" if r["repeats"] else ""
        self._print(f"\n{r['trained']} trials trained ({r['pruned']} pruned, {r['failed']} failed)"
                    f"{cut_short_words(trials)}; {rejected_words(trials)}{shares}{again}; "
                    f"{fmt_seconds(wall)}{rate}{busy}")  # fmt: skip
        if r["top"]:
            self._print(f"top {len(r['top'])} by {metric_name(cfg.score)} after {cfg.proxy_epochs} proxy epochs:")
            self._print(f"  trial  {label(cfg.score):>5}   params     MACs  architecture | recipe")
            for t in r["top"]:
                self._print(f"  #{t['number']:<4} {t['score']:.4f} {fmt_params(t['params']):>7} "
                            f"{fmt_params(t['macs']):>7}  {t['arch']} | {t['recipe']}")  # fmt: skip
        where = study_flags(study.study_name, r["storage"])
        self._print(*self.next_step([t["number"] for t in r["top"]], where))
        self._print("browse the study:", dashboard_command(r["storage"], study.study_name))
        return result

    def next_step(self, top: list[int], where: str) -> str:
        """What to run next: retrain the best trial not yet retrained; once the top ones are, the report."""
        from nas.retrain import retrains

        done = retrains(self.study) if self.study else {}
        todo = [n for n in top if f"trial-{n}" not in done]
        if todo:
            already = [f"#{n}" for n in top[: top.index(todo[0])]]
            what = f"the best not yet retrained ({', '.join(already)} {'is' if len(already) == 1 else 'are'})" \
                if already else "the best"  # fmt: skip
            return f"retrain {what} in full:", f"nas retrain --trial {todo[0]}{where}"
        return "leaderboard and figures:", f"nas report{where}"

    def _print(self, line: str, command: str = "") -> None:
        """A permanent line (above the footer while it shows), then a command to paste, if any. On a
        terminal a line is broken to its width at its separators (`fit`); a command is left whole
        for the terminal to wrap, so that it copies as one line, and goes on a line of its own where
        the two do not fit on one."""
        if self._console is None:
            print(f"{line} {command}" if command else line, file=self.out, flush=True)
            return
        from rich.text import Text

        if command and len(line) + 1 + len(command) <= self._console.width:
            line, command = f"{line} {command}", ""
        self._console.print(Text(fit(line, self._console.width)), soft_wrap=True)
        if command:
            self._console.print(Text(shell_lines("  " + command, self._console.width)), soft_wrap=True)


def shell_lines(command: str, width: int) -> str:
    """A command too wide for the terminal, broken before its options with the shell's ' \\'
    continuation: it still pastes as one command (a word longer than the line stays whole)."""
    rows = [""]
    for i, word in enumerate(command.split(" --")):
        word = word if i == 0 else "--" + word
        if rows[-1] and len(rows[-1]) + 1 + len(word) + 2 > width:
            rows[-1] += " \\"
            rows.append("    " + word)
        else:
            rows[-1] += (" " if rows[-1] else "") + word
    return "\n".join(rows)


def fit(line: str, width: int) -> str:
    """A permanent line for a terminal `width` wide: broken at its ' | ' separators, each continuation
    indented under the text that follows the line's fixed columns (those before its last double space:
    a trial's recipe goes under its architecture); a part too long for a line is broken at its words,
    never inside a number or a name."""
    if len(line) <= width:
        return line
    body = line.lstrip("\n")  # a blank line before it stays
    first = body.split(" | ")[0]
    at = first.rfind("  ") + 2
    indent = " " * (at if 2 < at <= width // 2 + 10 else 6)
    return line[: len(line) - len(body)] + "\n".join(_rows(body, width, indent))


def _rows(line: str, width: int, indent: str) -> list[str]:
    import textwrap

    rows: list[str] = []
    for part in line.split(" | "):
        if rows and len(rows[-1]) + 3 + len(part) <= width:
            rows[-1] += " | " + part
        elif len((indent if rows else "") + part) <= width:
            rows.append((indent if rows else "") + part)
        else:
            first = indent if rows else ""
            rows += textwrap.wrap(part, width, initial_indent=first, subsequent_indent=indent,
                                  break_long_words=False, break_on_hyphens=False)  # fmt: skip
    return rows


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
