"""The study layer: where studies live and how they are opened, the sampler and pruner factories,
and the vocabulary every reader of a study shares (why a trial ended, whether it holds a slot).

`nas search` writes studies through this module; `nas retrain`, `nas report` and the live display
read them through it. Nothing here trains or knows about devices.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError

if TYPE_CHECKING:
    from nas.space import Space

STUDIES_DIR = Path("studies")
REJECTED = ("over_budget", "over_macs", "underfilled", "invalid")  # proposals refused before any training
NOT_COUNTED = (*REJECTED, "trial_limit", "interrupted", "stale", "error", "duplicate_retry")  # hold no slot
STUDY_IDENTITY = ("budget", "max_macs", "space", "dataset", "split", "proxy_epochs", "proxy_subset", "fill_budget")

optuna.logging.set_verbosity(optuna.logging.ERROR)  # nas reports trials itself


# ---------------------------------------------------------------------------------------- storage


def default_study_name(space: Space, dataset: str, budget: int, max_macs: int | None = None) -> str:
    data = dataset.split(":", 1)[0] if not dataset.startswith("imagefolder:") else "imagefolder-" + Path(dataset[12:]).name
    macs = f"-{budget_label(max_macs)}macs" if max_macs else ""
    return f"{space.name}-{data}-{budget_label(budget)}{macs}"


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
        raise NasError(f"storage {url!r} is neither a database URL (sqlite:///..., postgresql://...) nor a journal file.")
    if url.startswith("sqlite:///"):
        _check_folder(url, Path(url.removeprefix("sqlite:///")))
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ModuleNotFoundError as e:
            raise NasError(f"storage {url}: the database driver is not installed ({e.name}); pip install it.") from None
        except Exception as e:  # sqlalchemy's ArgumentError, OperationalError, NoSuchModuleError...
            text = str(e).strip()
            # Workers started together on a new database race to create its tables: the loser sees
            # a duplicate version row or an existing table, and succeeds on a second look.
            if attempt < 4 and ("alembic_version" in text or "already exists" in text):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise NasError(f"cannot open storage {url}: {text.splitlines()[0] if text else type(e).__name__}") from None
    raise AssertionError("unreachable")


def _check_folder(url: str, path: Path) -> None:
    """studies/ is made on first use; any other folder must exist (a typo should not create one)."""
    if path.parent == STUDIES_DIR:
        path.parent.mkdir(exist_ok=True)
    elif not path.parent.is_dir():
        raise NasError(f"storage {url}: folder {path.parent} does not exist.")


def load_study(storage: str | None, study: str | None) -> optuna.Study:
    """An existing study. Without --study, the newest studies/*.db; with --study and no --storage,
    studies/<study>.db."""
    if study is None and storage is None:
        dbs = sorted(STUDIES_DIR.glob("*.db"), key=lambda p: p.stat().st_mtime)
        if not dbs:
            raise NasError(f"no study found: {STUDIES_DIR}/ holds no .db file; run nas search first or pass --study/--storage.")
        storage = f"sqlite:///{dbs[-1]}"
    url = storage_url(storage, study or "")
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise NasError(f"no study {study!r}: {url.removeprefix('sqlite:///')} does not exist.")
    store = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if study is None:
        if len(names) != 1:
            raise NasError(f"{url} holds {len(names)} studies ({', '.join(names)}); pass --study NAME.")
        study = names[0]
    if study not in names:
        raise NasError(f"no study {study!r} in {url} (it holds: {', '.join(names) or 'none'}).")
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
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=proxy_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; use {', '.join(PRUNERS)}.")


def open_search_study(name: str, url: str, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
                      identity: dict[str, Any], space_path: Path) -> optuna.Study:  # fmt: skip
    """Create the study, or resume it if it exists and was made with the same budget, space, data
    and proxy; anything else would mix incomparable scores, so it is refused."""
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)  # fmt: skip
    stored = study.user_attrs
    if "budget" not in stored:
        # "budget" marks a study as made, so it is written last: a worker that opens the study while
        # this one writes it sees either no identity (and writes the same) or all of it.
        attrs = {**identity, "versions": _versions(), "space_path": str(space_path)}
        for key, value in sorted(attrs.items(), key=lambda kv: kv[0] == "budget"):
            study.set_user_attr(key, value)
    else:
        for key in STUDY_IDENTITY:
            if stored.get(key) != identity[key]:
                shown = lambda v: "the file's content" if key == "space" else repr(v)  # noqa: E731
                raise NasError(
                    f"study {name!r} was made with {key} {shown(stored.get(key))}, not {shown(identity[key])}; "
                    f"pass another --study to start a new one."
                )
    return study


def _versions() -> dict[str, str]:
    import torch

    from nas import __version__

    return {"nas": __version__, "torch": torch.__version__, "optuna": optuna.__version__}


# ------------------------------------------------------------------------------------ vocabulary


def counts(t: FrozenTrial) -> bool:
    """Whether a trial holds one of the --trials slots: it claimed one, and did not end in a way
    that frees it again (interrupted, its worker died, an error instead of a result)."""
    return bool(t.user_attrs.get("counted")) and t.user_attrs.get("reason") not in NOT_COUNTED


def undecided(t: FrozenTrial) -> bool:
    """Not yet known whether it trains: RUNNING before its budget check, or a queued retry."""
    if t.state == TrialState.WAITING:
        return True
    return t.state == TrialState.RUNNING and not t.user_attrs.get("counted") and "reason" not in t.user_attrs


@dataclass(frozen=True)
class StoredTrial:
    """A trial addressed in the storage itself: the one place nas reaches past Optuna's public API
    (`Study._storage`, `Trial._trial_id`). Needed to fail another worker's stale trial, to stamp a
    heartbeat from a thread, and to read one told trial's attributes without loading them all."""

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
