"""The study layer: where studies live and how they are opened, the sampler and pruner factories,
and the vocabulary every reader of a study shares (why a trial ended, whether it holds a slot).

`nas search` writes studies through this module; `nas retrain`, `nas report` and the live display
read them through it. Nothing here trains or knows about devices.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file

from nas.score import metric_name
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError, StorageError
from nas.files import check_writable, replaced

if TYPE_CHECKING:
    from nas.space import Space

STUDIES_DIR = Path("studies")
REJECTED = ("over_budget", "over_macs", "over_ram", "underfilled", "invalid")  # proposals refused before any training
FILL_MIN = 0.9  # --fill-budget trains only candidates using 90-100% of the budget; the rest are underfilled
NOT_COUNTED = (*REJECTED, "trial_limit", "interrupted", "stale", "error", "duplicate_retry")  # hold no slot
CUT_SHORT = ("interrupted", "stale", "error")  # trainings that failed and freed their slot for another
STUDY_IDENTITY = ("budget", "max_macs", "max_ram", "space", "dataset", "split", "proxy_epochs", "proxy_subset",
                  "fill_budget", "score")  # fmt: skip
IDENTITY_DEFAULTS = {"score": "val_acc"}  # what a study made before the key was searched with
# Machine-readable data lives in system attrs, which optuna-dashboard does not show; the user attrs
# hold what a person reads there: short strings and numbers.
ARCH_KEY, RECIPE_KEY, SPACE_KEY = "nas:arch", "nas:recipe", "nas:space"
RETRAIN_PREFIX = "retrain:"  # + trial-42 / preset-resnet24: a retrain's result, a line for people, the dict for nas

optuna.logging.set_verbosity(optuna.logging.ERROR)  # nas reports trials itself


# ---------------------------------------------------------------------------------------- storage


def default_study_name(space: Space, dataset: str, budget: int, max_macs: int | None = None,
                       max_ram: int | None = None) -> str:  # fmt: skip
    data = dataset.split(":", 1)[0] if not dataset.startswith("imagefolder:") else "imagefolder-" + Path(dataset[12:]).name
    macs = f"-{budget_label(max_macs)}macs" if max_macs else ""
    ram = f"-{budget_label(max_ram)}ram" if max_ram else ""
    return f"{space.name}-{data}-{budget_label(budget)}{macs}{ram}"


def budget_label(budget: int) -> str:
    for unit, size in (("M", 10**6), ("k", 10**3)):
        if budget % size == 0:
            return f"{budget // size}{unit}"
    return str(budget)


def storage_url(storage: str | None, study: str) -> str:
    return storage or f"sqlite:///{STUDIES_DIR / study}.db"


def storage_file(url: str) -> Path | None:
    """The file a storage URL keeps its studies in (SQLite, a journal); None for a database server."""
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        return Path(url.removeprefix("journal:")).expanduser()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///"))
    return None


def study_url(study: optuna.Study) -> str:
    """The storage URL a study was opened from (Optuna keeps the storage, not the URL)."""
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage._backend if isinstance(study._storage, _CachedStorage) else study._storage
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.url
    path = getattr(getattr(storage, "_backend", None), "_file_path", None)  # JournalStorage(JournalFileBackend)
    return f"journal:{path}" if path else type(storage).__name__


def study_home(study_name: str, url: str) -> Path:
    """The folder of a study's files (retrains, artifacts, report): beside its storage file, so that
    the file and this folder, copied or handed on together, open anywhere; studies/<study> for a server."""
    path = storage_file(url)
    return (path.parent if path else STUDIES_DIR) / study_name


def artifact_dir(study_name: str, url: str) -> Path:
    """Where a study's files (retrained models, curves) are kept as Optuna artifacts."""
    return study_home(study_name, url) / "artifacts"


def study_flags(study_name: str, url: str) -> str:
    """' --study NAME [--storage URL]': what a printed command needs to reach this very study
    (--storage left out where --study alone finds it: studies/NAME.db)."""
    flags = f" --study {shlex.quote(study_name)}"
    return flags if url == storage_url(None, study_name) else f"{flags} --storage {shlex.quote(shown_url(url))}"


def dashboard_command(url: str, study_name: str) -> str:
    """The optuna-dashboard command that shows a study with its artifacts (without --artifact-dir
    the dashboard hides the Artifacts panels and refuses artifact downloads)."""
    target = shlex.quote(shown_url(url).removeprefix("journal:"))
    return f"optuna-dashboard {target} --artifact-dir {shlex.quote(str(artifact_dir(study_name, url)))}"


def shown_url(url: str) -> str:
    """A storage URL fit to print: any password replaced by *** (hints and errors end up in logs)."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy can parse
        return hide_passwords(url)


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it (what sits between `user:` and the last `@` of the
    address) shown as ***: for a command line that is recorded or printed."""
    return re.sub(r"(://[^:/@\s]*:)[^/\s]*@", r"\1***@", text)


def _missing_driver(url: str, e: ImportError) -> str:
    """Which database driver a URL needs and how to get it: Optuna's own message names none."""
    module = getattr(e.__cause__, "name", None) or getattr(e, "name", None) or "?"
    if module == "psycopg":
        hint = ("SQLAlchemy 2.1 opens postgresql:// with psycopg 3: pip install -e '.[postgresql]' "
                "(or pip install 'psycopg[binary]'), or write postgresql+psycopg2:// to use psycopg2")
    elif module == "psycopg2":
        hint = "pip install psycopg2-binary, or write postgresql:// to use psycopg 3"
    elif module == "MySQLdb":
        hint = "pip install mysqlclient, or write mysql+pymysql:// and pip install pymysql"
    else:
        hint = f"pip install the package that provides {module}"
    return f"storage {shown_url(url)}: the database driver module {module!r} is not installed; {hint}."


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: any SQLAlchemy URL (sqlite:///, postgresql://, mysql://) or a
    journal file for many processes on one machine (journal:PATH, or a path ending .journal/.log)."""
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        path = Path(url.removeprefix("journal:")).expanduser()
        _check_folder(url, path)
        try:
            return optuna.storages.JournalStorage(RepairingJournal(str(path)))
        except OSError as e:  # the file cannot be made or read
            raise StorageError(f"cannot open storage {url}: {e.strerror or e}.") from None
    if "://" not in url:
        raise NasError(f"storage {url!r} is neither a database URL (sqlite:///..., postgresql://...) nor a journal file.")
    if url.startswith("sqlite:///"):
        _check_folder(url, Path(url.removeprefix("sqlite:///")))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ImportError as e:  # Optuna re-raises the driver's ModuleNotFoundError without its name
            raise NasError(_missing_driver(url, e)) from None
        except Exception as e:  # sqlalchemy's ArgumentError, OperationalError, NoSuchModuleError...
            text = str(e).strip()
            # Workers started together on a new database race to create its tables: the loser sees
            # a duplicate version row or an existing table, and succeeds on a second look.
            if attempt < 4 and ("alembic_version" in text or "already exists" in text):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = text.splitlines()[0] if text else type(e).__name__
            raise NasError(f"cannot open storage {shown_url(url)}: {first}") from None
    raise AssertionError("unreachable")


class RepairingJournal(JournalFileBackend):
    """Optuna's journal file, kept readable whatever happens. Optuna appends one JSON line per
    operation; a write cut short (a full disk, a kill) leaves a line without its newline, which Optuna
    skips on read, but the next append is glued onto it and from then on every reader fails with a
    JSONDecodeError. Here every append first cuts such a tail off, under the journal's own lock, and a
    failed append is undone and said in one line; a journal already glued is repaired when opened."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        if not _journal_whole(Path(file_path)):
            with get_lock_file(self._lock):
                if not _journal_whole(Path(file_path)):  # again under the lock: it may have been an append in flight
                    repair_journal(Path(file_path))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        path = Path(self._file_path)
        try:
            with get_lock_file(self._lock):
                _cut_tail(path)
                size = path.stat().st_size
                try:
                    with open(path, "ab") as f:
                        f.write(("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)).encode())
                        f.flush()
                        os.fsync(f.fileno())
                except OSError:
                    with contextlib.suppress(OSError):
                        os.truncate(path, size)  # the journal as it was: no half line for the next writer
                    raise
        except OSError as e:
            raise StorageError(f"cannot write journal {path}: {e.strerror or e}; nothing stored before is lost "
                               f"(make room and run the same command again).") from None


def _journal_whole(path: Path) -> bool:
    """Every line of the journal is whole JSON (an empty journal is)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        return False
    try:
        for line in data.splitlines():
            json.loads(line)
    except ValueError:
        return False
    return True


def _cut_tail(path: Path) -> None:
    """Drop a last line without its newline: a write that was cut short (called under the lock)."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
    logging.getLogger("nas").warning(f"journal {path}: dropped a half-written last line (a write cut short by a "
                                     f"full disk or a kill); every complete line is kept.")  # fmt: skip


def repair_journal(path: Path) -> int:
    """Rewrite a journal so that every line is whole JSON (call it under the journal's lock): a cut last
    line is dropped, and a line that a later append was glued onto keeps that append. Returns the
    number of fragments dropped."""
    lines, dropped = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n") and _parses(line):
            lines.append(line)
            continue
        dropped += 1
        start = line.rfind(b'{"op_code":')  # every operation Optuna writes starts so
        if line.endswith(b"\n") and start > 0 and _parses(line[start:]):
            lines.append(line[start:])
    with replaced(path) as tmp:
        tmp.write_bytes(b"".join(lines))
    logging.getLogger("nas").warning(f"journal {path}: repaired, {dropped} half-written line(s) dropped; every "
                                     f"complete operation is kept.")  # fmt: skip
    return dropped


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _check_folder(url: str, path: Path) -> None:
    """studies/ is made on first use; any other folder must exist (a typo should not create one)."""
    if path.parent == STUDIES_DIR:
        path.parent.mkdir(exist_ok=True)
    elif not path.parent.is_dir():
        raise NasError(f"storage {url}: folder {path.parent} does not exist.")


def study_files() -> list[Path]:
    """The storage files in studies/ (SQLite and journal), oldest first."""
    return sorted((p for p in STUDIES_DIR.glob("*") if p.suffix in (".db", ".journal") and p.is_file()),
                  key=lambda p: p.stat().st_mtime)  # fmt: skip


def found_studies() -> list[tuple[str, str]]:
    """(name, storage URL) of every study in the files in studies/, oldest file first."""
    found = []
    for path in study_files():
        url = f"sqlite:///{path}" if path.suffix == ".db" else f"journal:{path}"
        found += [(s.study_name, url) for s in optuna.get_all_study_summaries(open_storage(url), include_best_trial=False)]
    return found


def locate(storage: str | None, study: str | None) -> str:
    """The storage URL of a study to read: --storage as given; else studies/<study>.db, or the file in
    studies/ that holds <study>; with neither named, the only study in studies/. Never a guess: where
    several could be meant, the mistake lists them."""
    if storage:
        return storage
    if study and (STUDIES_DIR / f"{study}.db").exists():
        return storage_url(None, study)
    found = found_studies()
    names = ", ".join(dict.fromkeys(name for name, _ in found))
    if study:
        urls = [url for name, url in found if name == study]
        if len(urls) == 1:
            return urls[0]
        if urls:
            raise NasError(f"study {study!r} is in {len(urls)} files ({', '.join(map(shown_url, urls))}); pass --storage.")
        held = f"it holds {names}" if names else "it holds none"
        raise NasError(f"no study {study!r} in {STUDIES_DIR}/ ({held}); pass --storage URL where it is kept elsewhere.")
    if not found:
        raise NasError(f"no study found: {STUDIES_DIR}/ holds no .db or .journal file; run nas search first "
                       f"or pass --study/--storage.")  # fmt: skip
    if len(found) > 1:
        raise NasError(f"{STUDIES_DIR}/ holds {len(found)} studies ({names}); name one with --study NAME "
                       f"(nas studies lists them).")  # fmt: skip
    return found[0][1]


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """A storage to read: a file that does not exist is said to be missing, never created."""
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise NasError(f"storage {shown_url(url)}: no such file {path}.")
    return open_storage(url)


def check_study_name(name: str) -> None:
    """A study's name becomes a folder under studies/ (its retrains, report and artifacts): one that
    would lead out of it, say `../x` from a shared database, is refused."""
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")):
        raise NasError(f"study name {name!r} cannot be a folder name under {STUDIES_DIR}/ (no '/', '\\' or '..'); "
                       f"pass another --study.")  # fmt: skip


def check_storage_writable(url: str) -> None:
    """Before any work: a command that records into a study (search, retrain, report) must be able to
    write its SQLite or journal file and the folder beside it (SQLite writes its own journal there)."""
    path = Path(url.removeprefix("journal:").removeprefix("sqlite:///")).expanduser()
    if "://" in url and not url.startswith("sqlite:///"):
        return  # a database server says so itself, at the first write
    if path.parent == STUDIES_DIR or path.parent.is_dir():  # another missing folder: open_storage says so
        check_writable(path.parent, "the study's storage")
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"cannot write the study's storage {path}: it is read-only.")


def storage_failure(e: BaseException) -> str | None:
    """What an exception says if it means a full disk or a read-only file, whatever layer wrapped it
    (Optuna reports SQLite's "database or disk is full" as "invalid data in the commit"); else None."""
    phrases = {"database or disk is full": "the disk is full", "readonly database": "the database is read-only",
               "unable to open database file": "the database cannot be opened for writing"}  # fmt: skip
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return f"{e.strerror}{f' ({e.filename})' if e.filename else ''}"
        said = next((v for k, v in phrases.items() if k in str(e)), None)
        if said:
            return said
        e = e.__cause__ or e.__context__
    return None


def load_study(storage: str | None, study: str | None) -> optuna.Study:
    """An existing study, found as `locate` says; reading it creates nothing, not even a missing file."""
    url = locate(storage, study)
    store = open_existing(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if study is None:
        if len(names) != 1:
            raise NasError(f"{shown_url(url)} holds {len(names)} studies ({', '.join(names)}); pass --study NAME.")
        study = names[0]
    if study not in names:
        raise NasError(f"no study {study!r} in {shown_url(url)} (it holds: {', '.join(names) or 'none'}).")
    check_study_name(study)
    return optuna.load_study(study_name=study, storage=store)


SAMPLERS = ("tpe", "random", "gp", "nsga2")  # what make_sampler builds: --sampler's choices
PRUNERS = ("hyperband", "median", "none")  # what make_pruner builds: --pruner's choices


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
            raise NasError("--sampler gp needs scipy: pip install -e '.[gp]' (or pip install scipy).")
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; use {', '.join(SAMPLERS)}.")


def make_pruner(name: str, proxy_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first_rung(proxy_epochs), max_resource=proxy_epochs,
                                              reduction_factor=3)  # fmt: skip
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=first_rung(proxy_epochs))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use {', '.join(PRUNERS)}.")


def first_rung(proxy_epochs: int) -> int:
    """The first epoch a pruner may stop a trial after: 60% of the proxy (3 of 5 epochs). Replayed
    over the full 5-epoch curves of four real CIFAR-10 searches (96 curves; benchmarks/RESULTS.md,
    2026-11-25 and 2026-11-30), the median rule from epoch 3 kept each search's best trial in all
    four, at Kendall tau 0.64-0.85 with the full proxy, for 72-83% of the epochs. Earlier rungs lost
    it: from epoch 2, Hyperband lost the best of both architecture-only searches in every bracket
    draw and the median rule lost the TPE one's (a wider net under a cosine schedule is behind at
    epoch 2 and ahead at 5); from epoch 1, Hyperband lost it in a quarter of its draws under warmup
    and one-cycle schedules; from epoch 3, Hyperband still lost one search's best in every draw."""
    return max(1, math.ceil(0.6 * proxy_epochs))


def open_search_study(name: str, url: str, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
                      identity: dict[str, Any], space_path: Path) -> optuna.Study:  # fmt: skip
    """Create the study, or resume it if it exists and was made with the same budget, space, data
    and proxy; anything else would mix incomparable scores, so it is refused."""
    check_study_name(name)
    check_storage_writable(url)
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)  # fmt: skip
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_name(identity.get("score", IDENTITY_DEFAULTS["score"]))])
    stored = {**study.user_attrs, "space": study_space(study)}
    if "budget" not in stored:
        # The space text is kept verbatim, for rebuilding trials, as a system attr: the dashboard would
        # show it as one run-on line; the study note shows it as YAML instead.
        set_study_system_attr(study, SPACE_KEY, identity["space"])
        # "budget" marks a study as made, so it is written last: a worker that opens the study while
        # this one writes it sees either no identity (and writes the same) or all of it.
        attrs = {**identity, "versions": _versions(), "space_path": str(space_path)}
        del attrs["space"]
        for key, value in sorted(attrs.items(), key=lambda kv: kv[0] == "budget"):
            study.set_user_attr(key, value)
    else:
        for key in STUDY_IDENTITY:
            was, now = (d.get(key, IDENTITY_DEFAULTS.get(key)) for d in (stored, identity))
            if was != now:
                shown = lambda v: ("the file's content" if key == "space" else f"{v:,}" if isinstance(v, int)  # noqa: E731
                                   and key in ("budget", "max_macs") else repr(v))  # 20,000, not 20000: a count to read
                raise NasError(f"study {name!r} was made with {key} {shown(was)}, not {shown(now)}; "
                               f"pass another --study to start a new one.")  # fmt: skip
    return study


def study_score(study: optuna.Study) -> str:
    """What the study's proxy trainings were turned into (`nas search --score`), val_acc for studies
    made before the choice existed."""
    return study.user_attrs.get("score", IDENTITY_DEFAULTS["score"])


def study_metric(study: optuna.Study) -> str:
    """The objective's name, as the dashboard, the report and the leaderboard show it: proxy_val_acc, proxy_tse..."""
    return metric_name(study_score(study))


def study_space(study: optuna.Study) -> str | None:
    """The search-space text a study was made with (studies made before it moved to a system attr
    keep it in the user attr `space`)."""
    return study_system_attrs(study).get(SPACE_KEY) or study.user_attrs.get("space")


def _versions() -> dict[str, str]:
    import torch

    from nas import __version__

    return {"nas": __version__, "torch": torch.__version__, "optuna": optuna.__version__}


# ------------------------------------------------------------------------------------ vocabulary


def counts(t: FrozenTrial) -> bool:
    """Whether a trial holds one of the --trials slots: it claimed one, and did not end in a way
    that frees it again (interrupted, its worker died, an error instead of a result)."""
    return bool(t.user_attrs.get("counted")) and t.user_attrs.get("reason") not in NOT_COUNTED


def cut_short(t: FrozenTrial) -> bool:
    """A training that failed without a result of its own and freed its slot (Ctrl-C, a dead worker,
    an error): no score, but said in every count and listing, since its slot was trained again."""
    return t.state == TrialState.FAIL and t.user_attrs.get("reason") in CUT_SHORT


def repeat(t: FrozenTrial) -> bool:
    """A proposal of a configuration trained before: it took that trial's score and trained nothing."""
    return t.user_attrs.get("reason") == "repeat"


def undecided(t: FrozenTrial) -> bool:
    """Not yet known whether it trains: RUNNING before its budget check, or a queued retry."""
    if t.state == TrialState.WAITING:
        return True
    return t.state == TrialState.RUNNING and not t.user_attrs.get("counted") and "reason" not in t.user_attrs


def trial_arch(t: FrozenTrial) -> dict[str, Any] | None:
    """The ArchSpec a trial trained, as a dict (older studies kept the dict in the user attr)."""
    old = t.user_attrs.get("arch")
    return t.system_attrs.get(ARCH_KEY) or (old if isinstance(old, dict) else None)


def trial_recipe(t: FrozenTrial) -> dict[str, Any] | None:
    """The Recipe a trial trained with, as a dict (older studies kept the dict in the user attr)."""
    old = t.user_attrs.get("recipe")
    return t.system_attrs.get(RECIPE_KEY) or (old if isinstance(old, dict) else None)


def trial_seconds(t: FrozenTrial) -> float | None:
    """Wall time of a trial's proxy training (`gpu_seconds` in older studies, whatever the device)."""
    return t.user_attrs.get("proxy_seconds", t.user_attrs.get("gpu_seconds"))


@dataclass(frozen=True)
class StoredTrial:
    """A trial addressed in the storage itself: with the two study-level functions below, the only
    places nas reaches past Optuna's public API (`Study._storage`, `Trial._trial_id`). Needed to fail
    another worker's stale trial, to stamp a heartbeat from a thread, to keep machine data in system
    attrs, and to read one told trial's attributes without loading them all."""

    storage: optuna.storages.BaseStorage
    trial_id: int

    @classmethod
    def of(cls, study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> StoredTrial:
        return cls(study._storage, trial._trial_id)

    def user_attrs(self) -> dict[str, Any]:
        return self.storage.get_trial_user_attrs(self.trial_id)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def set_system_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_system_attr(self.trial_id, key, value)

    def fail(self) -> bool:
        """FAIL it; False if it had already finished. Raises UpdateFinishedTrialError on some storages."""
        return self.storage.set_trial_state_values(self.trial_id, state=TrialState.FAIL)


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """A study's system attrs (Optuna 5 has no public API for them; the space text is one)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)
