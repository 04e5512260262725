"""Re-try the faults and bad inputs of issue 19's probe that run in seconds on a CPU, each as a user
would meet it: the `nas` command in a fresh folder, with a time limit. Each case is held (one line
and a non-zero exit, or the right result), a traceback, a hang, or lost (something stored is gone).

    python benchmarks/fault_cases.py            # prints one row per case and the totals

The full-disk and read-only cases mount a 2 MB tmpfs or a read-only bind (root with CAP_SYS_ADMIN;
elsewhere they are skipped). A worker dead on another machine is tests/test_faults.py's (a trial whose
heartbeat stops), as are the kills mid-write (injected in-process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 120
SEARCH = ("search", "--space", "tiny", "--dataset", "synthetic:200", "--trials", "1", "--proxy-epochs", "1", "--gpus", "cpu")
SMALL = "arch:\n  blocks: [1, 1]\n  channels: [8, 16]\nrecipe:\n  optimizer: sgd\n  lr: 0.05\n  epochs: 2\n"
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join(f'*{a}' for _ in range(9))}]\n" for a, b in zip("abcdefgh", "bcdefghi"))  # fmt: skip


def nas(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "nas", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=LIMIT_S, **kw)  # fmt: skip


def one_line(p: subprocess.CompletedProcess, says: str) -> str:
    """held: non-zero exit, one error line on stderr (after argparse's usage lines, for a flag) that
    `says` what is wrong, no traceback; 'other line' where it stopped for another reason."""
    if "Traceback" in p.stderr:
        return "traceback"
    lines = [line for line in p.stderr.strip().splitlines() if not line.startswith(("usage:", " "))]
    if p.returncode == 0 or len(lines) != 1 or "error:" not in lines[0]:
        return f"exit {p.returncode}"
    return "held" if says in lines[0] else "other line"


def failed(p: subprocess.CompletedProcess) -> str:
    """A command that should have worked and did not."""
    return "traceback" if "Traceback" in p.stderr else f"exit {p.returncode}"


def python(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=LIMIT_S)
    if p.returncode:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    return p.stdout.strip()


def make_study(cwd: Path, name: str = "s", url: str = "sqlite:///studies/s.db", trials: int = 3) -> None:
    (cwd / "studies").mkdir(exist_ok=True)
    python(f"""import optuna
from nas.study import open_storage
s = optuna.create_study(study_name={name!r}, storage=open_storage({url!r}), direction='maximize')
d = {{'x': optuna.distributions.FloatDistribution(0, 9)}}
for i in range({trials}):
    s.add_trial(optuna.trial.create_trial(params={{'x': float(i)}}, distributions=d, value=float(i)))""", cwd)


def journal_trials(path: Path) -> int:
    """What plain Optuna reads of a journal (-1: it cannot)."""
    try:
        return int(python(f"""import optuna
from optuna.storages.journal import JournalFileBackend
st = optuna.storages.JournalStorage(JournalFileBackend({str(path)!r}))
print(len(optuna.load_study(study_name='s', storage=st).trials))""", path.parent))
    except RuntimeError:
        return -1


# ------------------------------------------------------------------------------------------- cases


def bad_flag(says: str, *args: str):
    def case(cwd: Path) -> str:
        return one_line(nas(*args, cwd=cwd), says)
    return case


def bad_space(says: str, text: str | bytes):
    def case(cwd: Path) -> str:
        path = cwd / "space.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        p = nas("search", "--space", str(path), "--dataset", "synthetic:200", "--gpus", "cpu", cwd=cwd)
        return one_line(p, says)
    return case


def single_class(cwd: Path) -> str:
    from PIL import Image

    for split in ("train", "test"):
        (cwd / "img" / split / "only").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(cwd / "img" / split / "only" / "a.png")
    return one_line(nas("search", "--space", "tiny", "--dataset", "imagefolder:img", "--gpus", "cpu", cwd=cwd),
                    "one class folder")


def top(k: str):
    def case(cwd: Path) -> str:
        make_study(cwd)
        return one_line(nas("retrain", "--top", k, "--storage", "sqlite:///studies/s.db", cwd=cwd), "--top K needs")
    return case


def escaping_name(cwd: Path) -> str:
    make_study(cwd, "../../escaped", "sqlite:///shared.db")
    verdict = one_line(nas("report", "--storage", "sqlite:///shared.db", cwd=cwd), "cannot be a folder name")
    return verdict if not (cwd.parent / "escaped").exists() else "lost"


def output_under_a_file(flag: str):
    def case(cwd: Path) -> str:
        (cwd / "file").write_text("x")
        if flag == "--record":
            return one_line(nas("search", "--space", "tiny", "--dataset", "synthetic:200", "--record", "file/r.md",
                                cwd=cwd), "--record")  # fmt: skip
        (cwd / "small.yaml").write_text(SMALL)
        make_study(cwd)
        return one_line(nas("retrain", "--preset", "small.yaml", "--storage", "sqlite:///studies/s.db", "--dataset",
                            "synthetic:200", "--out", "file/run", cwd=cwd), "cannot write")  # fmt: skip
    return case


def damaged_checkpoint(cwd: Path) -> str:
    (cwd / "small.yaml").write_text(SMALL)
    make_study(cwd)
    (cwd / "run").mkdir()
    (cwd / "run" / "checkpoint.pt").write_bytes(b"")
    args = ("retrain", "--preset", "small.yaml", "--storage", "sqlite:///studies/s.db", "--dataset", "synthetic:200",
            "--out", "run")  # fmt: skip
    first = one_line(nas(*args, "--resume", cwd=cwd), "damaged")
    second = nas(*args, "--replace", cwd=cwd)
    return first if second.returncode == 0 else f"--replace: {failed(second)}"


def journal_cut(glued: bool):
    def case(cwd: Path) -> str:
        path = cwd / "studies" / "s.journal"
        make_study(cwd, url=f"journal:{path}")
        whole = path.read_bytes()
        if glued:  # Optuna's own append after the cut: what made every command fail
            python(f"""import optuna
from optuna.storages.journal import JournalFileBackend
st = optuna.storages.JournalStorage(JournalFileBackend({str(path)!r}))
s = optuna.load_study(study_name='s', storage=st); s.set_user_attr('a', 1); s.set_user_attr('b', 2)""", cwd)
        path.write_bytes(whole + b'{"op_code":5,"worker_id":"w","tri' + path.read_bytes()[len(whole):])
        p = nas("report", "--storage", f"journal:{path}", "--study", "s", cwd=cwd)
        n = journal_trials(path)
        if n != 3:
            return f"lost ({n} trials readable)"
        return "held" if p.returncode == 0 else failed(p)
    return case


def image_overwritten(cwd: Path) -> str:
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (cwd / "img" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (200, 0, 0)).save(cwd / "img" / split / c / "0.png")
    read = "from nas.data import load_dataset; print(int(load_dataset('imagefolder:img').train_x[0].float().mean()))"
    before = python(read, cwd)
    Image.new("RGB", (8, 8), (7, 7, 7)).save(cwd / "img" / "train" / "a" / "0.png")
    return "held" if python(read, cwd) != before else "silently wrong (old pixels)"


def stopped_after_last_epoch(sig: int):
    """Kill (or SIGTERM) a retrain as it logs its last epoch: the checkpoint holds every epoch, the
    test, files and records are not done. --resume must finish it without training again."""
    def case(cwd: Path) -> str:
        (cwd / "small.yaml").write_text(SMALL)
        make_study(cwd)
        args = ["retrain", "--preset", "small.yaml", "--storage", "sqlite:///studies/s.db", "--dataset",
                "synthetic:200", "--out", "run"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        p = subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        for line in p.stdout:
            if "epoch    2/2" in line:
                p.send_signal(sig)
                break
        out, err = p.communicate(timeout=LIMIT_S)
        if sig == signal.SIGTERM and "All 2 epochs are trained" not in out:
            return "SIGTERM said only: " + err.strip()
        if not (cwd / "run" / "checkpoint.pt").exists():
            return "finished before the signal (retry)"
        again = nas(*args, "--resume", cwd=cwd)
        if again.returncode or "epoch    1/2" in again.stdout:
            return "trained again" if not again.returncode else failed(again)
        return "held" if "holds all 2 epochs" in again.stdout else "not said"
    return case


@contextlib.contextmanager
def mounted(cwd: Path, options: list[str], source: str = "tmpfs"):
    """A folder under `cwd` mounted with `options` (a 2 MB tmpfs, a read-only bind); None where this
    process may not mount (not root, no CAP_SYS_ADMIN)."""
    target = cwd / "mnt"
    target.mkdir()
    if subprocess.run(["mount", *options, source, str(target)], capture_output=True).returncode:
        yield None
        return
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def full_disk(url_of: str):
    """A study on a 2 MB tmpfs, the disk then filled: nas report (it writes its notes) must say so in
    one line and lose nothing; with room again it runs."""
    def case(cwd: Path) -> str:
        with mounted(cwd, ["-t", "tmpfs", "-o", "size=2m"]) as mnt:
            if mnt is None:
                return "skipped (cannot mount)"
            url = url_of.format(mnt=mnt)
            make_study(cwd, url=url)
            with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            full = nas("report", "--storage", url, "--study", "s", "--out", "report", cwd=cwd)
            (mnt / "filler").unlink()
            kept = python(f"import optuna; from nas.study import open_storage; print(len(optuna.load_study("
                          f"study_name='s', storage=open_storage({url!r})).trials))", cwd)  # fmt: skip
            if kept != "3":
                return f"lost ({kept} of 3 trials)"
            again = nas("report", "--storage", url, "--study", "s", "--out", "report", cwd=cwd)
            return one_line(full, "cannot write") if again.returncode == 0 else f"after making room: {failed(again)}"
    return case


def read_only(what: str):
    """A read-only bind mount (root writes through chmod, not through this): refused in one line
    before any work."""
    def case(cwd: Path) -> str:
        src = cwd / "src"
        src.mkdir()
        (cwd / "small.yaml").write_text(SMALL)
        if what == "storage":
            make_study(cwd, url=f"sqlite:///{src}/s.db")
        with mounted(cwd, ["--bind", "-o", "ro"], str(src)) as ro:
            if ro is None:
                return "skipped (cannot mount)"
            make_study(cwd)
            args = {"storage": ("report", "--storage", f"sqlite:///{ro}/s.db", "--study", "s"),
                    "search storage": ("search", "--space", "tiny", "--dataset", "synthetic:200", "--gpus", "cpu",
                                       "--storage", f"sqlite:///{ro}/new.db"),
                    "retrain --out": ("retrain", "--preset", "small.yaml", "--storage", "sqlite:///studies/s.db",
                                      "--dataset", "synthetic:200", "--out", f"{ro}/run"),
                    "--record": ("search", "--space", "tiny", "--dataset", "synthetic:200", "--record",
                                 f"{ro}/RESULTS.md")}[what]  # fmt: skip
            p = nas(*args, cwd=cwd)
            late = "epoch" in p.stdout or "trained" in p.stdout  # refused after training, not before it
            return "after the work" if late else one_line(p, "cannot write" if what != "--record" else "--record")
    return case


CASES = {
    "--budget 1e400": bad_flag("too large", *SEARCH, "--budget", "1e400"),
    "--seed -1": bad_flag("a seed is between", *SEARCH, "--seed", "-1"),
    "--timeout 0": bad_flag("more than 0", *SEARCH, "--timeout", "0"),
    "retrain --top 0": top("0"),
    "retrain --top -1": top("-1"),
    "YAML alias bomb": bad_space("aliases expand", BOMB),
    "recursive YAML alias": bad_space("recursive", "a: &a [1, *a]\n"),
    "non-UTF-8 space file": bad_space("not UTF-8", "arch: {stages: 1}\n# café\n".encode("latin-1")),
    "cutout_holes 1e8": bad_space("cutout_holes can be at most", "arch: {stages: 1, blocks: 1, channels: 8}\n"
                                  "recipe: {cutout: 4, cutout_holes: 100000000}\n"),  # fmt: skip
    "single-class image folder": single_class,
    "study name ../../escaped in a shared database": escaping_name,
    "--record under a file": output_under_a_file("--record"),
    "retrain --out under a file": output_under_a_file("--out"),
    "empty checkpoint.pt (--resume, then --replace)": damaged_checkpoint,
    "journal with a cut last line, then nas report": journal_cut(glued=False),
    "journal already glued by Optuna's append, then nas report": journal_cut(glued=True),
    "image overwritten in place": image_overwritten,
    "SIGKILL after the last epoch, then --resume": stopped_after_last_epoch(signal.SIGKILL),
    "SIGTERM after the last epoch, then --resume": stopped_after_last_epoch(signal.SIGTERM),
    "full disk (2 MB tmpfs) under a journal, nas report": full_disk("journal:{mnt}/s.journal"),
    "full disk (2 MB tmpfs) under SQLite, nas report": full_disk("sqlite:///{mnt}/s.db"),
    "read-only bind mount: nas report on its database": read_only("storage"),
    "read-only bind mount: nas search storage": read_only("search storage"),
    "read-only bind mount: retrain --out": read_only("retrain --out"),
    "read-only bind mount: --record": read_only("--record"),
}


def main() -> int:
    verdicts = {}
    for name, case in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()
            work = Path(tmp) / "work"  # a folder under it: a study name leading out lands in tmp, checked there
            work.mkdir()
            try:
                verdicts[name] = case(work)
            except subprocess.TimeoutExpired:
                verdicts[name] = "hang"
            print(f"{verdicts[name]:<12} {time.monotonic() - start:5.1f} s  {name}", flush=True)
    held = sum(v == "held" for v in verdicts.values())
    print(json.dumps({"tried": len(verdicts), "held": held, "not held": len(verdicts) - held}))
    return 0 if held == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
