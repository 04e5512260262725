"""`nas search`: a budget-constrained Optuna study whose trials are short proxy trainings.

Each proposal is counted in closed form first. Over the budget, it is stored as PRUNED with the
constraint set (so TPE learns the feasible region) and costs no device time. Within the budget, it
claims one of the `--trials` slots, trains for `--proxy-epochs` on the training split and reports
validation accuracy per epoch to the pruner. Workers (one process per GPU and job) share the
storage; any number of machines can join with the same `--storage` and `--study`.

Slots are exact across workers: trial t trains only if fewer than `trials` lower-numbered trials
have trained or may still train (undecided ones count until they decide, which takes milliseconds).
Trial numbers are assigned by the storage, so every worker judges a trial the same way.

Liveness: a worker stamps a heartbeat on its trial when it starts and every HEARTBEAT_S after. A
RUNNING trial whose heartbeat is older than STALE_S, or whose worker process is gone from this
machine (same boot and PID namespace), is failed with reason `stale` by the next worker that looks,
and its params are queued again (up to MAX_RETRIES).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.count import count_macs, count_params, fit_width
from nas.space import Space, load_space

STUDIES_DIR = Path("studies")
HEARTBEAT_S = 20
STALE_S = 120
MAX_RETRIES = 2
# Longest wait for a lower-numbered trial to decide whether it trains. Live ones decide in
# milliseconds and dead ones are failed as stale within STALE_S; this only ends a wait on a queued
# retry nobody pops (its worker was interrupted), where claiming anyway can overshoot by one.
CLAIM_WAIT_S = 600
MAX_REJECTED_IN_A_ROW = 2000
MAX_ERRORS_IN_A_ROW = 3  # a broken device fails every trial: stop instead of burning the slots
HEARTBEAT_KEY = "nas:heartbeat"
FILL_MIN = 0.9  # --fill-budget trains only candidates using 90-100% of the budget
REJECTED = ("over_budget", "underfilled", "invalid")  # proposals refused before any training
NOT_COUNTED = (*REJECTED, "trial_limit", "interrupted", "stale", "error", "duplicate_retry")  # hold no slot
STUDY_IDENTITY = ("budget", "space", "dataset", "split", "proxy_epochs", "proxy_subset", "fill_budget")

optuna.logging.set_verbosity(optuna.logging.ERROR)  # nas reports trials itself


@dataclass(frozen=True)
class SearchConfig:
    budget: int
    trials: int
    space: str
    dataset: str = "cifar10"
    data_dir: str | None = None
    study: str | None = None
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    proxy_epochs: int = 4
    proxy_subset: float = 1.0
    val_size: int | None = None
    split_seed: int = 0
    fill_budget: bool = False
    devices: tuple[str, ...] = ("cpu",)  # one worker per entry: "cuda:0", "cuda:0", "cuda:1", ...
    seed: int | None = None
    timeout: float | None = None  # seconds after which no new trial starts


class TrialFailed(Exception):
    """A trial that trained and failed (NaN, out of memory, an error): FAIL with its reason."""


class TrialLimit(Exception):
    """All `--trials` slots were taken by other workers while this trial was being proposed."""


# ---------------------------------------------------------------------------------------- storage


def default_study_name(space: Space, dataset: str, budget: int) -> str:
    data = dataset.split(":", 1)[0] if not dataset.startswith("imagefolder:") else "imagefolder-" + Path(dataset[12:]).name
    return f"{space.name}-{data}-{budget_label(budget)}"


def budget_label(budget: int) -> str:
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if budget % size == 0:
            return f"{budget // size}{unit}"
    return str(budget)


def storage_url(storage: str | None, study: str) -> str:
    return storage or f"sqlite:///{STUDIES_DIR / study}.db"


def dashboard_arg(url: str) -> str:
    """What to pass to optuna-dashboard: a database URL, or a journal file's plain path."""
    return url.removeprefix("journal:")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: any SQLAlchemy URL (sqlite:///, postgresql://, mysql://) or a
    journal file for many processes on one machine (journal:PATH, or a path ending .journal/.log)."""
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url.removeprefix("journal:")).expanduser()
        _check_folder(url, path)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(f"storage {url!r} is neither a database URL (sqlite:///..., postgresql://...) nor a journal file.")
    if url.startswith("sqlite:///"):
        _check_folder(url, Path(url.removeprefix("sqlite:///")))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ModuleNotFoundError as e:
            raise ValueError(f"storage {url}: the database driver is not installed ({e.name}); pip install it.") from None
        except Exception as e:  # sqlalchemy's ArgumentError, OperationalError, NoSuchModuleError...
            text = str(e).strip()
            # Workers started together on a new database race to create its tables: the loser sees
            # a duplicate version row or an existing table, and succeeds on a second look.
            if attempt < 4 and ("alembic_version" in text or "already exists" in text):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ValueError(f"cannot open storage {url}: {text.splitlines()[0] if text else type(e).__name__}") from None
    raise AssertionError("unreachable")


def _check_folder(url: str, path: Path) -> None:
    """studies/ is made on first use; any other folder must exist (a typo should not create one)."""
    if path.parent == STUDIES_DIR:
        path.parent.mkdir(exist_ok=True)
    elif not path.parent.is_dir():
        raise ValueError(f"storage {url}: folder {path.parent} does not exist.")


def load_study(storage: str | None, study: str | None) -> optuna.Study:
    """An existing study. Without --study, the newest studies/*.db; with --study and no --storage,
    studies/<study>.db."""
    if study is None and storage is None:
        dbs = sorted(STUDIES_DIR.glob("*.db"), key=lambda p: p.stat().st_mtime)
        if not dbs:
            raise ValueError(f"no study found: {STUDIES_DIR}/ holds no .db file; run nas search first or pass --study/--storage.")
        storage = f"sqlite:///{dbs[-1]}"
    url = storage_url(storage, study or "")
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise ValueError(f"no study {study!r}: {url.removeprefix('sqlite:///')} does not exist.")
    store = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if study is None:
        if len(names) != 1:
            raise ValueError(f"{url} holds {len(names)} studies ({', '.join(names)}); pass --study NAME.")
        study = names[0]
    if study not in names:
        raise ValueError(f"no study {study!r} in {url} (it holds: {', '.join(names) or 'none'}).")
    return optuna.load_study(study_name=study, storage=store)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group=True is, and we rely on it
    if name == "tpe":
        # multivariate+group: per-stage params exist only for some N. 128 EI candidates (default 24)
        # lift the share of within-budget proposals after 50 from ~0.7 to ~0.86 (benchmarks/).
        return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                          n_ei_candidates=128, seed=seed)  # fmt: skip
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        import importlib.util

        if importlib.util.find_spec("scipy") is None:  # Optuna's GP fits its kernel with scipy
            raise ValueError("--sampler gp needs scipy: pip install -e '.[gp]' (or pip install scipy).")
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; use tpe, random, gp or nsga2.")


def make_pruner(name: str, proxy_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=proxy_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use hyperband, median or none.")


def open_search_study(cfg: SearchConfig, space: Space, identity: dict[str, Any]) -> optuna.Study:
    """Create the study, or resume it if it exists and was made with the same budget, space, data
    and proxy; anything else would mix incomparable scores, so it is refused."""
    name = cfg.study or default_study_name(space, cfg.dataset, cfg.budget)
    storage = open_storage(storage_url(cfg.storage, name))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(cfg.sampler, cfg.seed),
                                pruner=make_pruner(cfg.pruner, cfg.proxy_epochs))  # fmt: skip
    stored = study.user_attrs
    if "budget" not in stored:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        study.set_user_attr("versions", _versions())
        study.set_user_attr("space_path", str(space.path))
    else:
        for key in STUDY_IDENTITY:
            if stored.get(key) != identity[key]:
                shown = lambda v: "the file's content" if key == "space" else repr(v)  # noqa: E731
                raise ValueError(
                    f"study {name!r} was made with {key} {shown(stored.get(key))}, not {shown(identity[key])}; "
                    f"pass another --study to start a new one."
                )
    return study


def _versions() -> dict[str, str]:
    import torch

    from nas import __version__

    return {"nas": __version__, "torch": torch.__version__, "optuna": optuna.__version__}


# ------------------------------------------------------------------------------------------ slots


def counts(t: FrozenTrial) -> bool:
    """Whether a trial holds one of the --trials slots: it claimed one, and did not end in a way
    that frees it again (interrupted, its worker died, an error instead of a result)."""
    return bool(t.user_attrs.get("counted")) and t.user_attrs.get("reason") not in NOT_COUNTED


def undecided(t: FrozenTrial) -> bool:
    """Not yet known whether it trains: RUNNING before its budget check, or a queued retry."""
    if t.state == TrialState.WAITING:
        return True
    return t.state == TrialState.RUNNING and not t.user_attrs.get("counted") and "reason" not in t.user_attrs


def claim_slot(study: optuna.Study, trial: optuna.Trial, n: int, on_wait: Callable[[], Any] = lambda: None) -> bool:
    """Take a slot for `trial` if fewer than `n` lower-numbered trials hold or may take one. While a
    lower trial is still deciding (milliseconds, unless its worker died), `on_wait` runs every few
    seconds: stale detection, which decides a dead worker's trial."""
    deadline, next_wait = time.monotonic() + CLAIM_WAIT_S, time.monotonic() + 5
    while True:
        lower = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        held = sum(counts(t) for t in lower)
        pending = sum(undecided(t) for t in lower)
        if held >= n:
            return False
        if held + pending < n or time.monotonic() > deadline:  # the deadline: a last resort, see CLAIM_WAIT_S
            trial.set_user_attr("counted", True)
            return True
        if time.monotonic() > next_wait:
            on_wait()
            next_wait = time.monotonic() + 5
        time.sleep(0.05)


def slots_taken(trials: list[FrozenTrial]) -> int:
    return sum(counts(t) or undecided(t) for t in trials)


# ---------------------------------------------------------------------------------------- liveness


@functools.cache
def _machine() -> str:
    """Who can see whose processes: the host name alone is shared by containers on one host, so
    add the boot and the PID namespace where Linux tells them."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "|".join(parts)


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "machine": _machine(), "pid": os.getpid()}


def _process_gone(worker: dict[str, Any] | None) -> bool:
    """True only for a worker of this machine (same boot, same PID namespace) whose process is gone."""
    if not worker or worker.get("machine") != _machine():
        return False
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    return False


class Liveness:
    """Finds RUNNING trials whose worker is gone: its heartbeat is older than STALE_S (clocks of
    different hosts only need to agree within a minute or so), or it ran on this machine and its
    process no longer exists. A trial that never got a heartbeat (its worker died inside ask())
    ages on this worker's own clock: trial start times are naive local times, unusable across
    time zones. A stale trial is failed with reason `stale` and its params are queued again."""

    def __init__(self) -> None:
        self.unstamped: dict[int, float] = {}  # trial id -> when this worker first saw it unstamped

    def fail_stale(self, study: optuna.Study) -> list[int]:
        now, failed = time.time(), []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_KEY)
            age = now - beat if beat is not None else time.monotonic() - self.unstamped.setdefault(t._trial_id, time.monotonic())
            if age < STALE_S and not _process_gone(t.user_attrs.get("worker")):
                continue
            try:  # the reason first: a finished trial's attributes are read-only
                study._storage.set_trial_user_attr(t._trial_id, "reason", "stale")
                if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished, or another worker failed it first
            failed.append(t.number)
            retries = t.user_attrs.get("retries", 0)
            if t.user_attrs.get("counted") and retries < MAX_RETRIES:
                # Two workers may both get here on SQLite (no row locks); the objective refuses the
                # second copy of a retry (reason duplicate_retry).
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retries": retries + 1})
        return failed


class Heartbeat:
    """Stamps the running trial at its start and every HEARTBEAT_S seconds from a daemon thread."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage, self.trial_id = storage, None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def start(self, trial: optuna.Trial) -> None:
        trial.set_user_attr("worker", _me())
        self.storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, time.time())
        self.trial_id = trial._trial_id

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            trial_id = self.trial_id
            if trial_id is not None:
                with contextlib.suppress(Exception):  # a finished trial or a storage hiccup
                    self.storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a trial is created and tagged or told, so no trial is left
    RUNNING without an owner and no result is lost; they raise KeyboardInterrupt right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: got.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if got:
            raise KeyboardInterrupt


def _terminate_as_interrupt() -> None:
    """SIGTERM (kill, a scheduler's stop) ends a worker the way Ctrl-C does: trial marked, clean exit."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


# ----------------------------------------------------------------------------------------- worker


def _interrupted(study: optuna.Study, trial: optuna.Trial) -> None:
    with contextlib.suppress(Exception):
        trial.set_user_attr("reason", "interrupted")
        study.tell(trial, state=TrialState.FAIL)


@dataclass
class Worker:
    """Runs trials on one device until the slots are taken, the timeout passes, or Ctrl-C."""

    cfg: SearchConfig
    space: Space
    study: optuna.Study
    data: Any  # nas.data.Split on the device
    device: str
    on_trial_end: Callable[[], None] | None = None
    liveness: Liveness = field(default_factory=Liveness)

    def run(self) -> None:
        heartbeat = Heartbeat(self.study._storage)
        deadline = time.monotonic() + self.cfg.timeout if self.cfg.timeout else math.inf
        rejected_in_a_row = errors_in_a_row = 0
        try:
            while time.monotonic() < deadline:
                self.liveness.fail_stale(self.study)
                trials = self.study.get_trials(deepcopy=False)
                queued = any(t.state == TrialState.WAITING for t in trials)  # a retry: ask() pops it first
                if slots_taken(trials) >= self.cfg.trials and not queued:
                    return
                trial = None
                try:
                    with signals_deferred():
                        trial = self.study.ask()
                        heartbeat.start(trial)
                except KeyboardInterrupt:  # held during ask(): the new trial must not stay RUNNING
                    if trial is not None:
                        _interrupted(self.study, trial)
                    raise
                outcome = self._run_trial(trial)
                heartbeat.trial_id = None
                if outcome:  # None: another worker judged it stale and ended it; it is not ours to tell
                    with signals_deferred():
                        self.study.tell(trial, outcome[1], state=outcome[0], skip_if_finished=True)
                self._release_memory()
                if self.on_trial_end:
                    self.on_trial_end()
                attrs = self.study._storage.get_trial_user_attrs(trial._trial_id)
                reason = attrs.get("reason")
                rejected_in_a_row = rejected_in_a_row + 1 if reason in REJECTED else 0
                errors_in_a_row = errors_in_a_row + 1 if reason == "error" else 0
                if reason == "trial_limit":
                    return
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                    raise ValueError(
                        f"the sampler proposed {rejected_in_a_row} configurations in a row that were over the "
                        f"budget, invalid or (with --fill-budget) too small to fill it; narrow the space."
                    )
                if errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
                    raise ValueError(f"{errors_in_a_row} trials in a row failed with an error on {self.device} "
                                     f"(last: {attrs.get('error')}); see the log above.")  # fmt: skip
        finally:
            heartbeat.stop()

    def _release_memory(self) -> None:
        """Jobs sharing a GPU each keep a cache of freed blocks; give it back so a neighbour's next
        trial does not run out of memory for nothing."""
        if self.device.startswith("cuda") and self.cfg.devices.count(self.device) > 1:
            import torch

            torch.cuda.empty_cache()

    def _run_trial(self, trial: optuna.Trial) -> tuple[TrialState, float | None] | None:
        try:
            return TrialState.COMPLETE, self.objective(trial)
        except optuna.TrialPruned:
            return TrialState.PRUNED, None
        except (TrialFailed, TrialLimit):
            return TrialState.FAIL, None
        except optuna.exceptions.UpdateFinishedTrialError:
            return None  # another worker took it for stale (this one stalled past STALE_S) and failed it
        except KeyboardInterrupt:
            _interrupted(self.study, trial)
            raise
        except Exception as e:  # a bug or a broken device: record it; a run of them stops the worker
            logging.getLogger("nas").exception("trial %d failed", trial.number)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trial.set_user_attr("reason", "error")
                trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            return TrialState.FAIL, None

    def objective(self, trial: optuna.Trial) -> float:
        cfg = self.cfg
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is not None and any(t.user_attrs.get("retry_of") == retry_of and t.number < trial.number
                                        for t in self.study.get_trials(deepcopy=False)):  # fmt: skip
            trial.set_user_attr("reason", "duplicate_retry")
            raise TrialFailed(f"trial {retry_of} is already being retried")
        try:
            spec, recipe = self.space.decode(lambda name, p: p.suggest(trial, name), **self.data.shape)
            if cfg.fill_budget:
                spec = fit_width(spec, cfg.budget)
        except ValueError as e:  # an impossible combination (say, a pool that does not divide the map)
            trial.set_constraint("budget", 1.0)
            trial.set_user_attr("reason", "invalid")
            trial.set_user_attr("error", str(e))
            raise optuna.TrialPruned(str(e)) from None
        params = count_params(spec)
        # <= 0 is feasible. With --fill-budget, a candidate no width multiple of 8 brings to 90% of
        # the budget (a deep net of narrow stages: one step of 8 channels adds 50%) is infeasible too.
        floor = FILL_MIN * cfg.budget if cfg.fill_budget else 0
        trial.set_constraint("budget", max(params - cfg.budget, floor - params) / cfg.budget)
        for key, value in {"params": params, "macs": count_macs(spec), "arch": spec.to_dict(),
                           "recipe": recipe.to_dict()}.items():  # fmt: skip
            trial.set_user_attr(key, value)
        if params > cfg.budget:
            trial.set_user_attr("reason", "over_budget")
            raise optuna.TrialPruned(f"{params:,} parameters, over the budget of {cfg.budget:,}")
        if params < floor:
            trial.set_user_attr("reason", "underfilled")
            raise optuna.TrialPruned(f"{params:,} parameters, under {FILL_MIN:.0%} of the budget at any width")
        if not claim_slot(self.study, trial, cfg.trials, on_wait=lambda: self.liveness.fail_stale(self.study)):
            trial.set_user_attr("reason", "trial_limit")
            raise TrialLimit
        return self.train(trial, spec, recipe)

    def train(self, trial: optuna.Trial, spec, recipe) -> float:
        import torch

        from nas.bench import device_name
        from nas.train import fit

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics["val_acc"], epoch)
            if trial.should_prune():
                trial.set_user_attr("reason", "pruned")
                trial.set_user_attr("epoch_seconds", [round(s, 3) for s in seconds + [metrics["seconds"]]])
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")
            seconds.append(metrics["seconds"])

        seconds: list[float] = []
        trial.set_user_attr("device", device_name(torch.device(self.device)))
        start = time.perf_counter()
        try:
            result = fit(spec, recipe.compressed(self.cfg.proxy_epochs), self.data, device=self.device, on_epoch=on_epoch)
        finally:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # keep the first error
                trial.set_user_attr("gpu_seconds", round(time.perf_counter() - start, 3))
        trial.set_user_attr("epoch_seconds", [round(h["seconds"], 3) for h in result.history])
        if result.status != "complete":
            if result.status == "oom":
                torch.cuda.empty_cache()
            trial.set_user_attr("reason", result.status)
            trial.set_user_attr("error", result.message)
            raise TrialFailed(result.message)
        return result.final["val_acc"]


# ------------------------------------------------------------------------------------------ runs


def prepare(cfg: SearchConfig) -> tuple[Space, Any, dict[str, Any]]:
    """Space, training data (a Split on the CPU) and the study identity; fails fast on bad input."""
    from nas.data import load_dataset, validation_split

    space = load_space(cfg.space)
    if cfg.trials < 1:
        raise ValueError("--trials must be at least 1.")
    if cfg.proxy_epochs < 1:
        raise ValueError("--proxy-epochs must be at least 1.")
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    smallest = space.smallest(**ds.shape)
    if count_params(smallest) > cfg.budget:
        raise ValueError(
            f"no configuration of {space.path} fits a budget of {cfg.budget:,} parameters: the smallest "
            f"({smallest.describe()}) has {count_params(smallest):,}."
        )
    split = validation_split(ds, cfg.val_size, cfg.split_seed, cfg.proxy_subset)
    identity = {"budget": cfg.budget, "space": space.text, "dataset": cfg.dataset, "split": split.info,
                "proxy_epochs": cfg.proxy_epochs, "proxy_subset": cfg.proxy_subset, "fill_budget": cfg.fill_budget}  # fmt: skip
    return space, split, identity


def run_worker(cfg: SearchConfig, device: str, on_trial_end: Callable[[], None] | None = None,
               prepared: tuple | None = None) -> None:  # fmt: skip
    _terminate_as_interrupt()
    space, split, identity = prepared or prepare(cfg)
    study = open_search_study(cfg, space, identity)
    Worker(cfg, space, study, split.to(device), device, on_trial_end).run()


def _worker_process(cfg: SearchConfig, device: str) -> None:
    """Entry point of a spawned worker process: one line and status 2 on a user error."""
    try:
        run_worker(cfg, device)
    except KeyboardInterrupt:
        pass
    except ValueError as e:
        print(f"nas search worker on {device}: error: {e}", file=sys.stderr)
        sys.exit(2)


def run_search(cfg: SearchConfig, progress: Any) -> optuna.Study:
    """Run the search to completion (or Ctrl-C), reporting through `progress` (nas.progress)."""
    space, split, identity = prepare(cfg)
    study = open_search_study(cfg, space, identity)
    progress.start(study, cfg)
    if len(cfg.devices) == 1:
        run_worker(cfg, cfg.devices[0], lambda: progress.update(study), (space, split, identity))
    else:
        _run_processes(cfg, study, progress)
    progress.update(study)
    return study


def _run_processes(cfg: SearchConfig, study: optuna.Study, progress: Any) -> None:
    import multiprocessing as mp

    study_cfg = replace(cfg, study=study.study_name)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    procs = [ctx.Process(target=_worker_process, args=(study_cfg, d), daemon=False) for d in cfg.devices]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            progress.update(study)
            for p in procs:
                p.join(timeout=2.0 / len(procs))
    except KeyboardInterrupt:
        # Workers got the same Ctrl-C: give them time to mark their trials failed and leave.
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise ValueError(f"{len(bad)} of {len(procs)} workers exited with an error (exit codes {bad}); see their output above.")
