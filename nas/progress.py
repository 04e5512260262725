"""What a running search shows: a line per trained trial, a live status line (trained k/N, rejected
over budget, running, best so far, trials per hour, ETA) and the final summary. Everything is read
back from the study, so one display serves one worker or many."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.study import REJECTED, counts, dashboard_arg, storage_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10**6 else f"{n / 1e3:.1f}k"


def recipe_brief(r: dict[str, Any]) -> str:
    parts = [f"{r['optimizer']} lr {r['lr']:.3g}", r["schedule"], f"bs {r['batch_size']}"]
    parts += [f"{k} {r[k]:g}" for k in ("cutout", "mixup", "cutmix", "rotation", "label_smoothing") if r.get(k)]
    return ", ".join(parts)


def arch_brief(t: FrozenTrial) -> str:
    from nas.arch import ArchSpec

    return ArchSpec.from_dict(t.user_attrs["arch"]).describe() if "arch" in t.user_attrs else "?"


def trained(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in FINISHED and counts(t)]


def budget_shares(trials: list[FrozenTrial]) -> tuple[float | None, float | None]:
    """Share of proposals within budget (not rejected): over all, and after the first 50."""
    proposals = sorted((t for t in trials if "params" in t.user_attrs or t.user_attrs.get("reason") == "invalid"),
                       key=lambda t: t.number)  # fmt: skip
    within = [t.user_attrs.get("reason") not in REJECTED for t in proposals]
    share = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return share(within), share(within[50:])


class GpuMonitor:
    """Samples the busy share of the GPUs in use once a second in a daemon thread: NVML's
    utilization, the share of time in which a kernel ran on the GPU, whichever process launched it
    (two jobs on one GPU are one GPU's time, not two). `busy()` is None where it cannot be measured,
    and `unavailable` says why (nvidia-ml-py missing, NVML without a driver)."""

    def __init__(self, devices: tuple[str, ...], interval: float = 1.0):
        self.samples: list[float] = []
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
                self.samples.append(self._read())
            except Exception as e:  # the driver went away mid-run
                self.unavailable = _nvml_problem(e)
                return

    def busy(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def describe(self) -> str:
        busy = self.busy()
        return f"{busy:.0%}" if busy is not None else f"unavailable ({self.unavailable or 'no sample yet'})"

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
        self.t0 = time.time()
        self.trained_before = 0
        self.cfg: Any = None
        self.monitor: GpuMonitor | None = None
        self.last_trained = -1

    def start(self, study: optuna.Study, cfg: Any) -> None:
        self.cfg, self.t0 = cfg, time.time()
        trials = study.get_trials(deepcopy=False)
        self.seen = {t.number for t in trials if t.state in FINISHED}
        self.trained_before = self.last_trained = len(trained(trials))
        self.monitor = GpuMonitor(cfg.devices)
        devices = ", ".join(cfg.devices)
        self._print(f"study {study.study_name} in {storage_url(cfg.storage, study.study_name)}")
        self._print(f"budget {cfg.budget:,} params | space {cfg.space} | data {cfg.dataset} | proxy {cfg.proxy_epochs} "
                    f"epochs x {cfg.proxy_subset:g} of the training split | {cfg.sampler} + {cfg.pruner} | {devices}")  # fmt: skip
        if self.trained_before:
            self._print(f"resuming: {self.trained_before} of {cfg.trials} trials already trained")

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        for t in sorted(trials, key=lambda t: t.number):
            if t.state in FINISHED and t.number not in self.seen:
                self.seen.add(t.number)
                if counts(t):
                    self._print(self.trial_line(t))
        status = self.status_line(study, trials)
        if self.live:
            self.out.write("\r\033[K" + status)
            self.out.flush()
        elif len(trained(trials)) != self.last_trained:  # a log gets a line per trained trial, not per rejection
            self._print(status)
        self.last_trained = len(trained(trials))

    def trial_line(self, t: FrozenTrial) -> str:
        a = t.user_attrs
        head = f"#{t.number:<4}"
        if t.state == TrialState.COMPLETE:
            head += f" val {t.value:.4f}"
        elif t.state == TrialState.PRUNED:
            step, value = max(t.intermediate_values.items()) if t.intermediate_values else (0, float("nan"))
            head += f" pruned after epoch {step} (val {value:.4f})"
        else:
            head += f" FAILED: {a.get('reason', '?')} ({a.get('error', '')})"
        seconds = f" | {a['gpu_seconds']:.1f} s" if "gpu_seconds" in a else ""
        params = f" {fmt_params(a['params'])}" if "params" in a else ""
        recipe = f" | {recipe_brief(a['recipe'])}" if "recipe" in a else ""
        return f"{head}{params} {arch_brief(t)}{recipe}{seconds}"

    def status_line(self, study: optuna.Study, trials: list[FrozenTrial]) -> str:
        cfg = self.cfg
        done = trained(trials)
        running = sum(1 for t in trials if t.state == TrialState.RUNNING and counts(t))
        rejected = sum(1 for t in trials if t.user_attrs.get("reason") in REJECTED)
        rate = self.rate(done)
        parts = [f"trained {len(done)}/{cfg.trials}", f"rejected {rejected}", f"running {running}"]
        best = self.best(trials)
        if best:
            parts.append(f"best {best.value:.4f} (#{best.number}, {fmt_params(best.user_attrs['params'])})")
        if rate:
            eta = max(0, cfg.trials - len(done) - running) / rate * 3600
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
        if self.monitor:
            self.monitor.stop()
        cfg, trials = self.cfg, study.get_trials(deepcopy=False)
        done = trained(trials)
        share, share_after_50 = budget_shares(trials)
        wall = time.time() - self.t0
        result = {
            "study": study.study_name,
            "storage": storage_url(cfg.storage, study.study_name),
            "trained": len(done),
            "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "failed": sum(t.state == TrialState.FAIL for t in done),
            "rejected": sum(1 for t in trials if t.user_attrs.get("reason") in REJECTED),
            "within_budget": share,
            "within_budget_after_50": share_after_50,
            "wall_seconds": wall,
            "trials_per_hour": self.rate(done),
            "gpu_busy": self.monitor.busy() if self.monitor else None,
            "gpu_busy_text": self.monitor.describe() if self.monitor and self.monitor.indices else None,
            "top": [{"number": t.number, "val_acc": t.value, "params": t.user_attrs["params"],
                     "macs": t.user_attrs["macs"], "arch": arch_brief(t), "recipe": recipe_brief(t.user_attrs["recipe"])}
                    for t in sorted((t for t in trials if t.state == TrialState.COMPLETE),
                                    key=lambda t: -t.value)[:top]],  # fmt: skip
        }
        if self.live:
            self.out.write("\n")
        r = result
        shares = (f"{r['within_budget']:.0%} of proposals within budget, {r['within_budget_after_50']:.0%} after the first 50"
                  if r["within_budget_after_50"] is not None else
                  f"{r['within_budget']:.0%} of proposals within budget" if r["within_budget"] is not None else "")  # fmt: skip
        rate = f", {r['trials_per_hour']:.0f} trials/h" if r["trials_per_hour"] else ""
        busy = f", GPU busy {r['gpu_busy_text']}" if r["gpu_busy_text"] else ""
        self._print(f"\n{r['trained']} trials trained ({r['pruned']} pruned, {r['failed']} failed), "
                    f"{r['rejected']} proposals rejected; {shares}; {fmt_seconds(wall)}{rate}{busy}")  # fmt: skip
        if r["top"]:
            self._print(f"top {len(r['top'])} by validation accuracy after {cfg.proxy_epochs} proxy epochs:")
            for t in r["top"]:
                self._print(f"  #{t['number']:<4} {t['val_acc']:.4f}  {fmt_params(t['params'])} params  "
                            f"{t['macs'] / 1e6:,.0f}M MACs  {t['arch']} | {t['recipe']}")  # fmt: skip
            where = f" --study {study.study_name}" + (f" --storage {cfg.storage}" if cfg.storage else "")
            self._print(f"retrain the best in full: nas retrain --trial {r['top'][0]['number']}{where}")
            self._print(f"browse the study: optuna-dashboard {dashboard_arg(r['storage'])}")
        return result

    def _print(self, line: str) -> None:
        if self.live:
            self.out.write("\r\033[K")
        print(line, file=self.out, flush=True)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
