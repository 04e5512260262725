"""Liveness of search workers: a heartbeat on each running trial, detection of trials whose worker
is gone, and signal handling that never leaves a trial without an owner.

A worker stamps a heartbeat on its trial when it starts and every HEARTBEAT_S after. A RUNNING
trial whose heartbeat is older than STALE_S, or whose worker process is gone from this machine
(same boot and PID namespace), is failed with reason `stale` by the next worker that looks, and its
params are queued again (up to MAX_RETRIES).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.study import StoredTrial, counts

HEARTBEAT_S = 20
SILENT_S = 3 * HEARTBEAT_S  # no beat for this long: its worker may be dead (on another machine, or a zombie)
STALE_S = 120
MAX_RETRIES = 2
HEARTBEAT_KEY = "nas:heartbeat"
WORKER_KEY = "nas:worker"  # who runs a trial, for the machine; the user attr `worker` says it for people


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


def _process_gone(worker: Any) -> bool:
    """True only for a worker of this machine (same boot, same PID namespace) whose process is gone."""
    if not isinstance(worker, dict) or worker.get("machine") != _machine():
        return False
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return _zombie(int(worker["pid"]))


def _zombie(pid: int) -> bool:
    """A process that exited and that its parent has not reaped: it still answers kill(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")  # the state follows the command name in parentheses


class Liveness:
    """Finds RUNNING trials whose worker is gone: its heartbeat is older than STALE_S (clocks of
    different hosts only need to agree within a minute or so), or it ran on this machine and its
    process no longer exists. A trial that never got a heartbeat (its worker died inside ask())
    ages on this worker's own clock: trial start times are naive local times, unusable across
    time zones. A stale trial is failed with reason `stale` and its params are queued again."""

    def __init__(self) -> None:
        self.unstamped: dict[int, float] = {}  # trial number -> when this worker first saw it unstamped

    def fail_stale(self, study: optuna.Study) -> list[int]:
        now, failed = time.time(), []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_KEY)
            age = now - beat if beat is not None else time.monotonic() - self.unstamped.setdefault(t.number, time.monotonic())
            if age < STALE_S and not _process_gone(t.system_attrs.get(WORKER_KEY, t.user_attrs.get("worker"))):
                continue
            stored = StoredTrial.of(study, t)  # not ours: Optuna's public API writes only to one's own trials
            try:  # the reason first: a finished trial's attributes are read-only
                stored.set_user_attr("reason", "stale")
                if not stored.fail():
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


def silent(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """RUNNING trials holding a --trials slot whose heartbeat has stopped for SILENT_S: their worker
    may be dead where no process table shows it; they turn stale at STALE_S. A worker that finds
    the slots all taken waits for these rather than leave a slot held by nobody."""
    now = time.time()
    return [t for t in trials if t.state == TrialState.RUNNING and counts(t)
            and now - t.system_attrs.get(HEARTBEAT_KEY, now) > SILENT_S]  # fmt: skip


class Heartbeat:
    """Stamps the running trial at its start and every HEARTBEAT_S seconds from a daemon thread."""

    def __init__(self) -> None:
        self.trial: StoredTrial | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def start(self, study: optuna.Study, trial: optuna.Trial) -> None:
        me = _me()
        trial.set_user_attr("worker", f"{me['host']} pid {me['pid']}")
        stored = StoredTrial.of(study, trial)  # system attrs: the dashboard does not list them
        stored.set_system_attr(WORKER_KEY, me)  # older studies kept this dict in the user attr
        stored.set_system_attr(HEARTBEAT_KEY, time.time())
        self.trial = stored

    def finish(self) -> None:
        """The trial ended: stop stamping it."""
        self.trial = None

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            trial = self.trial
            if trial is not None:
                with contextlib.suppress(Exception):  # a finished trial or a storage hiccup
                    trial.set_system_attr(HEARTBEAT_KEY, time.time())

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


def terminate_as_interrupt() -> None:
    """SIGTERM (kill, a scheduler's stop) ends a worker the way Ctrl-C does: trial marked, clean exit."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
