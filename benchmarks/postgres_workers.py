"""Three `nas search` workers on one PostgreSQL study, one killed with SIGKILL mid-trial: the study
must end with exactly --trials trained trials, the killed trial failed as `stale` and retried, and
every trial finished before the kill unchanged.

    python benchmarks/postgres_workers.py                      # starts a throwaway local server
    python benchmarks/postgres_workers.py --url postgresql://user:pass@host/db

Without --url it needs PostgreSQL's server programs (Debian: apt-get install postgresql; they live
in /usr/lib/postgresql/<version>/bin) and runs initdb/pg_ctl in a temporary folder (as the
`postgres` user when run as root, since the server refuses to run as root), then removes it.
It needs the driver: pip install -e '.[postgresql]'. CI has no PostgreSQL; this is run by hand
and its result goes to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from optuna.trial import TrialState  # noqa: E402

from nas.liveness import WORKER_KEY  # noqa: E402
from nas.study import counts, load_study, shown_url  # noqa: E402


def server_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        sys.exit(f"{name} not found: install PostgreSQL's server (apt-get install postgresql) or pass --url.")
    return found


@contextlib.contextmanager
def local_server():
    """A throwaway PostgreSQL listening on a Unix socket in a temporary folder; yields its URL."""
    root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:  # a free port number (the socket file is named after it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(server_bin("initdb"), "-D", str(data), "-U", "nas", "--auth=trust")
    run(server_bin("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=''")  # fmt: skip
    try:
        run(server_bin("createdb"), "-h", str(root), "-p", str(port), "-U", "nas", "nas")
        yield f"postgresql://nas@/nas?host={root}&port={port}"
    finally:
        run(server_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def wait_for(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ValueError):  # the study may not exist yet
            got = check()
            if got:
                return got
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


def run(url: str, trials: int, workers: int, logs: Path) -> list[tuple[str, str]]:
    study_name = f"pg-workers-{int(time.time())}"
    command = [sys.executable, "-m", "nas", "search", "--space", "tiny", "--dataset", "synthetic:200", "--gpus", "cpu",
               "--proxy-epochs", "3", "--pruner", "none", "--budget", "20k", "--trials", str(trials),
               "--storage", url, "--study", study_name]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for i in range(workers):
        log = open(logs / f"worker{i}.log", "w")
        procs.append(subprocess.Popen([*command, "--seed", str(i)], stdout=log, stderr=subprocess.STDOUT, env=env))
    victim = procs[0]

    def victim_training():
        study = load_study(url, study_name)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.system_attrs.get(WORKER_KEY, {}).get("pid") == victim.pid and counts(t) and t.intermediate_values:
                return study, t.number
        return None

    study, killed = wait_for("worker 0 to be training a trial", victim_training, 600)
    before = {t.number: (t.state, t.value, dict(t.intermediate_values)) for t in study.get_trials()
              if t.state.is_finished()}  # fmt: skip
    victim.send_signal(signal.SIGKILL)
    victim.wait()  # reaped, as a shell would: a zombie still answers kill(pid, 0) as alive
    t0 = time.monotonic()
    for p in procs[1:]:
        if p.wait(timeout=1200) != 0:
            sys.exit(f"a surviving worker failed (exit {p.returncode}); see {logs}")
    seconds = time.monotonic() - t0

    study = load_study(url, study_name)
    all_trials = study.get_trials()
    held = [t for t in all_trials if counts(t)]
    dead = all_trials[killed]
    retries = [t for t in all_trials if t.user_attrs.get("retry_of") == killed]
    after = {t.number: (t.state, t.value, dict(t.intermediate_values)) for t in all_trials}
    checks = {
        f"exactly {trials} trained trials": len(held) == trials,
        "no trial left RUNNING": not [t for t in all_trials if t.state == TrialState.RUNNING],
        f"killed trial #{killed} failed as stale": dead.state == TrialState.FAIL and dead.user_attrs.get("reason") == "stale",
        "its params retried": any(t.params == dead.params and t.state.is_finished() for t in retries),
        f"{len(before)} trials finished before the kill unchanged": all(after[n] == v for n, v in before.items()),
    }  # fmt: skip
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not all(checks.values()):
        sys.exit(f"failed; worker logs in {logs}")
    return [("storage", shown_url(url).split("?")[0] + " (local server)"),
            ("workers", f"{workers} processes of `nas search --trials {trials}`, worker 0 killed with SIGKILL while "
                        f"training trial #{killed}"),
            ("result", f"{len(held)} trained trials (exactly --trials), #{killed} failed as stale and retried as "
                       f"#{retries[0].number}, {len(before)} earlier results unchanged, {len(all_trials)} trials in all"),
            ("survivors finished", f"{seconds:.0f} s after the kill")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL URL (default: start a throwaway local server)")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="nas-pg-logs-"))
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server())
        rows = run(url, args.trials, args.workers, logs)
    print("\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows))
    shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
