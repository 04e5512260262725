"""`nas search`: a budget-constrained Optuna study whose trials are short proxy trainings.

Each proposal is counted in closed form first. Over the budget, it is stored as PRUNED with the
constraint set (so TPE learns the feasible region) and costs no device time; its optuna-dashboard
note says it was rejected (the dashboard lists it as Pruned, like a pruned training). Within the
budget, it claims one of the `--trials` slots, trains for `--proxy-epochs` on the training split
and reports validation accuracy per epoch to the pruner. Workers (one process per GPU and job) share the
storage; any number of machines can join with the same `--storage` and `--study`.

Slots are exact across workers: trial t trains only if fewer than `trials` lower-numbered trials
have trained or may still train (undecided ones count until they decide, which takes milliseconds).
Trial numbers are assigned by the storage, so every worker judges a trial the same way.

Liveness (heartbeats, stale workers, signals) is `nas.liveness`; storage, samplers and the trial
vocabulary are the study layer, `nas.study`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import nas.liveness
from nas.count import count_macs, count_params, count_peak_memory, fit_width
from nas.errors import NasError, StorageError
from nas.liveness import HEARTBEAT_KEY, Heartbeat, Liveness, signals_deferred, silent, terminate_as_interrupt
from nas.score import horizon, metric_name, of_history
from nas.space import DEFAULT_SPACE, Space, load_space
from nas.study import (ARCH_KEY, FILL_MIN, RECIPE_KEY, REJECTED, StoredTrial, counts, default_study_name,
                       make_pruner, make_sampler, open_search_study, storage_failure, storage_url, trial_arch,
                       trial_recipe, undecided)  # fmt: skip

# Longest wait for a lower-numbered trial to decide whether it trains. Live ones decide in
# milliseconds and dead ones are failed as stale within STALE_S; this only ends a wait on a queued
# retry nobody pops (its worker was interrupted), where claiming anyway can overshoot by one.
CLAIM_WAIT_S = 600
MAX_REJECTED_IN_A_ROW = 2000
MAX_ERRORS_IN_A_ROW = 3  # a broken device fails every trial: stop instead of burning the slots


@dataclass(frozen=True)
class SearchConfig:
    """A search's settings. `nas search` has one flag per field (devices comes from --gpus and
    --jobs-per-gpu) and takes its defaults from here: the one place they live."""

    budget: int = 5_000_000
    max_macs: int | None = None  # MACs per image, forward; None: no limit
    max_ram: int | None = None  # peak activation bytes per image in int8 (count_peak_memory); None: no limit
    trials: int = 200  # trained trials wanted, all workers together
    space: str = str(DEFAULT_SPACE)
    dataset: str = "cifar10"
    data_dir: str | None = None
    study: str | None = None  # None: <space>-<dataset>-<budget>
    storage: str | None = None  # None: sqlite:///studies/<study>.db
    sampler: str = "tpe"
    pruner: str = "median"  # the one that kept the best trial in every replayed search (nas.study.first_rung)
    proxy_epochs: int = 5  # chosen for the 20-minute/200-trial target, not yet tuned on a GPU
    proxy_subset: float = 1.0
    val_size: int | None = None  # None: 10% of the training set
    split_seed: int = 0
    fill_budget: bool = False
    devices: tuple[str, ...] = ("cpu",)  # one worker per entry: "cuda:0", "cuda:0", "cuda:1", ...
    seed: int | None = None
    timeout: float | None = None  # seconds after which no new trial starts
    precision: str | None = None  # overrides the recipes' (auto); not stored in the trials' recipes
    compile: bool = False  # torch.compile each trial's model; its compile time counts in the trial's time
    score: str = "val_acc"  # what a proxy training is turned into (nas.score): the objective and the pruner's signal


class TrialFailed(Exception):
    """A trial that trained and failed (NaN, out of memory, an error): FAIL with its reason."""


class TrialLimit(Exception):
    """All `--trials` slots were taken by other workers while this trial was being proposed."""


# ------------------------------------------------------------------------------------------ slots


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


def trained_twin(study: optuna.Study, spec, recipe) -> FrozenTrial | None:
    """A trial that trained this very network and recipe to the end, if any. Once TPE has narrowed
    a small space it proposes trained configurations again (the tiny CIFAR-10 search trained one
    three times: benchmarks/RESULTS.md, 2026-11-30)."""
    arch, rec = _plain(spec.to_dict()), _plain(recipe.to_dict())
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if counts(t) and _plain(trial_arch(t)) == arch and _plain(trial_recipe(t)) == rec), None)  # fmt: skip


def _plain(d: dict[str, Any] | None) -> Any:
    return json.loads(json.dumps(d))  # as stored: tuples become lists


def slots_taken(trials: list[FrozenTrial]) -> int:
    return sum(counts(t) or undecided(t) for t in trials)


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
        heartbeat = Heartbeat()
        deadline = time.monotonic() + self.cfg.timeout if self.cfg.timeout else math.inf
        rejected_in_a_row = repeats_in_a_row = errors_in_a_row = 0
        try:
            while time.monotonic() < deadline:
                self.liveness.fail_stale(self.study)
                trials = self.study.get_trials(deepcopy=False)
                queued = any(t.state == TrialState.WAITING for t in trials)  # a retry: ask() pops it first
                if slots_taken(trials) >= self.cfg.trials and not queued:
                    if not silent(trials):
                        return
                    self._wait_for_silent(deadline)  # until it is failed as stale and queued again
                    continue
                trial = None
                try:
                    with signals_deferred():
                        trial = self.study.ask()
                        heartbeat.start(self.study, trial)
                except KeyboardInterrupt:  # held during ask(): the new trial must not stay RUNNING
                    if trial is not None:
                        _interrupted(self.study, trial)
                    raise
                outcome = self._run_trial(trial)
                heartbeat.finish()
                if outcome:  # None: another worker judged it stale and ended it; it is not ours to tell
                    with signals_deferred():
                        self.study.tell(trial, outcome[1], state=outcome[0], skip_if_finished=True)
                self._release_memory()
                if self.on_trial_end:
                    self.on_trial_end()
                attrs = StoredTrial.of(self.study, trial).user_attrs()
                reason = attrs.get("reason")
                untrained = reason in (*REJECTED, "repeat")  # proposed, and nothing learnt from training
                rejected_in_a_row = rejected_in_a_row + 1 if untrained else 0
                repeats_in_a_row = repeats_in_a_row + (reason == "repeat") if untrained else 0
                errors_in_a_row = errors_in_a_row + 1 if reason == "error" else 0
                if reason == "trial_limit":
                    return
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW and repeats_in_a_row > rejected_in_a_row / 2:
                    raise NasError(f"the sampler proposed {rejected_in_a_row} configurations in a row and none was new: "
                                   f"{repeats_in_a_row} had been trained already, the rest were over a limit or invalid; "
                                   f"it finds nothing new worth training in this space: widen it or ask for fewer "
                                   f"trials.")  # fmt: skip
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                    raise NasError(
                        f"the sampler proposed {rejected_in_a_row} configurations in a row that were over the "
                        f"budget, invalid or (with --fill-budget) too small to fill it; narrow the space."
                    )
                if errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
                    raise NasError(f"{errors_in_a_row} trials in a row failed with an error on {self.device} "
                                     f"(last: {attrs.get('error')}); see the log above.")  # fmt: skip
        finally:
            heartbeat.stop()

    def _wait_for_silent(self, deadline: float) -> None:
        """Every slot is taken, one by a trial whose worker went silent (dead on another machine, or
        a zombie): wait for it to turn stale, when fail_stale queues it again for this worker to
        train. Past the timeout, say which trial is held and when a rerun retrains it."""
        while silent(held := self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
            if time.monotonic() >= deadline:
                t = silent(held)[0]
                quiet = time.time() - t.system_attrs[HEARTBEAT_KEY]
                raise NasError(f"trial {t.number} holds a --trials slot, but its worker ({t.user_attrs.get('worker', '?')}) "
                               f"has been silent for {quiet:.0f} s; it is failed as stale after {nas.liveness.STALE_S} s of silence: "
                               f"run the same command again then to retrain it.")  # fmt: skip
            time.sleep(min(1.0, max(0.1, deadline - time.monotonic())))
            self.liveness.fail_stale(self.study)

    def _release_memory(self) -> None:
        """Jobs sharing a GPU each keep a cache of freed blocks; give it back so a neighbour's next
        trial does not run out of memory for nothing."""
        if self.cfg.devices.count(self.device) > 1:
            from nas.device import release_memory

            release_memory(self.device)

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
        except StorageError:
            raise  # a full disk or a read-only storage: every trial would fail alike, and recording it too
        except Exception as e:  # a bug or a broken device: record it; a run of them stops the worker
            if storage_failure(e):
                raise  # the same, as Optuna's storage reports it
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
                spec = fit_width(spec, cfg.budget, cfg.max_macs, self.space.width_multiple)
        except NasError as e:  # an impossible combination (say, a pool that does not divide the map)
            trial.set_constraint("budget", 1.0)
            trial.set_user_attr("reason", "invalid")
            trial.set_user_attr("error", str(e))
            explain(trial, f"**Rejected before training**: not a valid network ({e}). Never built.")
            raise optuna.TrialPruned(str(e)) from None
        params, macs, ram = count_params(spec), count_macs(spec), count_peak_memory(spec)
        # <= 0 is feasible. With --fill-budget, a candidate no width (of the space's multiple) brings to 90% of
        # the budget (a deep net of narrow stages: one step of 8 channels adds 50%) is infeasible too,
        # unless the MAC limit is what stops it.
        fills_macs = cfg.max_macs is not None and macs >= FILL_MIN * cfg.max_macs
        floor = FILL_MIN * cfg.budget if cfg.fill_budget and not fills_macs else 0
        trial.set_constraint("budget", max(params - cfg.budget, floor - params) / cfg.budget)
        if cfg.max_macs is not None:  # a constraint of its own: the sampler learns each limit apart
            trial.set_constraint("macs", (macs - cfg.max_macs) / cfg.max_macs)
        if cfg.max_ram is not None:
            trial.set_constraint("ram", (ram - cfg.max_ram) / cfg.max_ram)
        for key, value in {"params": params, "macs": macs, "ram": ram, "arch": spec.describe(),
                           "recipe": recipe.describe()}.items():  # fmt: skip
            trial.set_user_attr(key, value)
        stored = StoredTrial.of(self.study, trial)
        stored.set_system_attr(ARCH_KEY, spec.to_dict())
        stored.set_system_attr(RECIPE_KEY, recipe.to_dict())
        never = ("Never built or trained: it is stored as Pruned, with its constraint, so that the sampler learns "
                 "where the limit is.")  # fmt: skip
        share = f"{params:,} parameters, {params / cfg.budget:.0%} of the budget of {cfg.budget:,}"
        if params > cfg.budget:
            trial.set_user_attr("reason", "over_budget")
            explain(trial, f"**Rejected before training**: {share}. {never}")
            raise optuna.TrialPruned(f"{params:,} parameters, over the budget of {cfg.budget:,}")
        if cfg.max_macs is not None and macs > cfg.max_macs:
            trial.set_user_attr("reason", "over_macs")
            explain(trial, f"**Rejected before training**: {macs:,} MACs per image, {macs / cfg.max_macs:.0%} of "
                           f"the limit of {cfg.max_macs:,}. {never}")  # fmt: skip
            raise optuna.TrialPruned(f"{macs:,} MACs per image, over the limit of {cfg.max_macs:,}")
        if cfg.max_ram is not None and ram > cfg.max_ram:
            trial.set_user_attr("reason", "over_ram")
            explain(trial, f"**Rejected before training**: {ram:,} bytes of peak activation memory (int8), "
                           f"{ram / cfg.max_ram:.0%} of the limit of {cfg.max_ram:,}. {never}")  # fmt: skip
            raise optuna.TrialPruned(f"{ram:,} bytes of peak activation memory, over the limit of {cfg.max_ram:,}")
        if params < floor:
            trial.set_user_attr("reason", "underfilled")
            explain(trial, f"**Rejected before training**: {share} at the widest fit; `--fill-budget` trains only "
                           f"networks that use {FILL_MIN:.0%} of it or more.")  # fmt: skip
            raise optuna.TrialPruned(f"{params:,} parameters, under {FILL_MIN:.0%} of the budget at any width")
        twin = trained_twin(self.study, spec, recipe)
        if twin is not None:  # the seeded proxy would score it alike: tell the sampler, train nothing
            trial.set_user_attr("reason", "repeat")
            trial.set_user_attr("repeat_of", twin.number)
            explain(trial, f"**Not trained**: the same network and recipe as trial {twin.number}, which was "
                           f"trained; it takes that trial's score, so the sampler learns it again, and holds no "
                           f"`--trials` slot.")  # fmt: skip
            return twin.value
        if not claim_slot(self.study, trial, cfg.trials, on_wait=lambda: self.liveness.fail_stale(self.study)):
            trial.set_user_attr("reason", "trial_limit")
            raise TrialLimit
        return self.train(trial, spec, recipe)

    def train(self, trial: optuna.Trial, spec, recipe) -> float:
        import torch

        from nas.bench import device_name
        from nas.device import release_memory
        from nas.train import fit

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            rows.append(metrics)
            score = of_history(self.cfg.score, rows, reach)
            trial.report(score, epoch)  # the score so far: the pruner's signal
            if trial.should_prune():
                trial.set_user_attr("reason", "pruned")
                keep_curves(trial, rows)
                explain(trial, f"**Pruned** by the {self.cfg.pruner} pruner after epoch {epoch} of "
                               f"{self.cfg.proxy_epochs}: {metric_name(self.cfg.score)} {score:.4f}.")  # fmt: skip
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        rows: list[dict[str, float]] = []  # the proxy's history so far
        reach = horizon(recipe.epochs, self.cfg.proxy_subset)  # where an extrapolated curve is read
        trial.set_user_attr("device", device_name(torch.device(self.device)))
        proxy = recipe.compressed(self.cfg.proxy_epochs)
        if self.cfg.precision:
            proxy = replace(proxy, precision=self.cfg.precision)
        start = time.perf_counter()
        try:
            result = fit(spec, proxy, self.data, device=self.device, on_epoch=on_epoch, compile=self.cfg.compile)
        finally:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # keep the first error
                trial.set_user_attr("proxy_seconds", round(time.perf_counter() - start, 3))  # compiling included
        keep_curves(trial, result.history)
        trial.set_user_attr("precision", result.precision)
        if result.status != "complete":
            if result.status == "oom":
                release_memory(self.device)
            trial.set_user_attr("reason", result.status)
            trial.set_user_attr("error", result.message)
            raise TrialFailed(result.message)
        return of_history(self.cfg.score, result.history, reach)


def keep_curves(trial: optuna.Trial, history: list[dict[str, float]]) -> None:
    """Per epoch: wall seconds, and the training loss (training speed, nas.score.tse, can be read off any trial)."""
    trial.set_user_attr("epoch_seconds", [round(h["seconds"], 3) for h in history])
    trial.set_user_attr("train_loss", [round(h["train_loss"], 5) for h in history])


def explain(trial: optuna.Trial, markdown: str) -> None:
    """Say on the trial's optuna-dashboard page why it ended as it did (the dashboard lists a
    rejected proposal and a pruned training both as Pruned). Needs optuna-dashboard installed."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(trial, markdown)


# ------------------------------------------------------------------------------------------ runs


def prepare(cfg: SearchConfig) -> tuple[Space, Any, dict[str, Any]]:
    """Space, training data (a Split on the CPU) and the study identity; fails fast on bad input."""
    from nas.data import load_dataset, validation_split

    space = load_space(cfg.space)
    if cfg.trials < 1:
        raise NasError("--trials must be at least 1.")
    if cfg.proxy_epochs < 1:
        raise NasError("--proxy-epochs must be at least 1.")
    for flag, limit in (("--max-macs", cfg.max_macs), ("--max-ram", cfg.max_ram)):
        if limit is not None and limit < 1:
            raise NasError(f"{flag} must be at least 1.")
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    for measure, limit, what in ((count_params, cfg.budget, "a budget of {:,} parameters"),
                                 (count_macs, cfg.max_macs, "a limit of {:,} MACs per image"),
                                 (count_peak_memory, cfg.max_ram, "a limit of {:,} bytes of peak activation memory")):  # fmt: skip
        smallest = space.smallest(measure, **ds.shape)
        if limit is not None and measure(smallest) > limit:
            raise NasError(f"no configuration of {space.path} fits {what.format(limit)}: the smallest "
                           f"({smallest.describe()}) has {measure(smallest):,}.")  # fmt: skip
    split = validation_split(ds, cfg.val_size, cfg.split_seed, cfg.proxy_subset)
    identity = {"budget": cfg.budget, "max_macs": cfg.max_macs, "max_ram": cfg.max_ram, "space": space.text, "dataset": cfg.dataset,
                "split": split.info, "proxy_epochs": cfg.proxy_epochs, "proxy_subset": cfg.proxy_subset,
                "fill_budget": cfg.fill_budget, "score": cfg.score}  # fmt: skip
    return space, split, identity


def _open_study(cfg: SearchConfig, space: Space, identity: dict[str, Any], worker: int = 0) -> optuna.Study:
    name = cfg.study or default_study_name(space, cfg.dataset, cfg.budget, cfg.max_macs, cfg.max_ram)
    study = open_search_study(name, storage_url(cfg.storage, name), make_sampler(cfg.sampler, None),
                              make_pruner(cfg.pruner, cfg.proxy_epochs), identity, space.path)  # fmt: skip
    if cfg.seed is not None:
        study.sampler = make_sampler(cfg.sampler, sampler_seed(cfg.seed, len(study.get_trials(deepcopy=False)), worker))
    return study


def sampler_seed(seed: int, trials_so_far: int, worker: int) -> int:
    """The sampler's seed for one worker of one run: --seed alone would make a resumed run replay
    the first run's proposals, and every worker propose the same ones. Still reproducible."""
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far, worker]).generate_state(1)[0])


def run_worker(cfg: SearchConfig, device: str, on_trial_end: Callable[[], None] | None = None,
               prepared: tuple | None = None, worker: int = 0) -> None:  # fmt: skip
    terminate_as_interrupt()
    space, split, identity = prepared or prepare(cfg)
    study = _open_study(cfg, space, identity, worker)
    data = split.to(device, check_memory=False)  # run_search checked every GPU for all its jobs
    Worker(cfg, space, study, data, device, on_trial_end).run()


def check_devices(cfg: SearchConfig, space: Space, split: Any) -> None:
    """Before any worker starts: each GPU must hold a copy of the data per job on it, with room to
    train, and the precision asked for must exist there. One clear line otherwise."""
    from nas.device import check_fits, choose_precision, resolve_device

    for name in sorted(set(cfg.devices)):
        device = resolve_device(name)
        check_fits(split.device_bytes(space.largest_batch()), device, split.describe(), jobs=cfg.devices.count(name))
        if cfg.precision:
            choose_precision(cfg.precision, device)


def _worker_process(cfg: SearchConfig, device: str, worker: int) -> None:
    """Entry point of a spawned worker process: one line and status 2 on a user error."""
    import torch

    from nas.device import threads_per_worker

    torch.set_num_threads(threads_per_worker(len(cfg.devices)))  # the machine's cores, shared among the workers
    try:
        run_worker(cfg, device, worker=worker)
    except KeyboardInterrupt:
        pass
    except NasError as e:
        print(f"nas search worker on {device}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # a full disk or a read-only storage under Optuna's own error: one line too
        why = storage_failure(e)
        if why is None:
            raise
        print(f"nas search worker on {device}: error: cannot write: {why}; make room and run the same command "
              f"again.", file=sys.stderr)  # fmt: skip
        sys.exit(2)


def run_search(cfg: SearchConfig, progress: Any) -> optuna.Study:
    """Run the search to completion (or Ctrl-C), reporting through `progress` (nas.progress)."""
    from nas.device import use_expandable_segments

    if any(d.startswith("cuda") for d in cfg.devices):
        use_expandable_segments()  # before CUDA is first used here, and inherited by the workers
    space, split, identity = prepare(cfg)
    check_devices(cfg, space, split)
    study = _open_study(cfg, space, identity)
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
    procs = [ctx.Process(target=_worker_process, args=(study_cfg, d, i), daemon=False) for i, d in enumerate(cfg.devices)]
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
        raise NasError(f"{len(bad)} of {len(procs)} workers exited with an error (exit codes {bad}); see their output above.")
