"""Outputs written so that nothing stored is lost: each file goes to a temporary name beside it and is
renamed over the old one only when whole (a kill or a full disk leaves the old file as it was), what a
dead run left half-written is removed, and a folder is checked writable before the work that fills it."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nas.errors import StorageError

TMP = re.compile(r"\.tmp(\d+)$")  # name.tmp<pid>: a file being written by process <pid>


def tmp_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (the writer's pid names its leftovers)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; when the block ends without error it replaces `path` at once
    (os.replace is atomic), otherwise it is removed and `path` keeps what it held."""
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove the `*.tmp<pid>` files of processes that no longer run (a kill mid-write); returns them."""
    gone = []
    for p in folder.glob("*.tmp*") if folder.is_dir() else ():
        m = TMP.search(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def check_writable(folder: Path, what: str) -> None:
    """Make `folder` if needed and prove a file can be written in it, before the work that fills it:
    a read-only or full place is one line now, not a traceback after hours of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise StorageError(f"cannot write {what} in {folder}: {e.strerror or e}.") from None
