"""`nas retrain`: train a trial's configuration (or a preset) in full on the training + validation
images, test it on the official test set (plain and flip-TTA), and keep everything.

Written beside the study's storage file, to `<its folder>/<study>/<name>/` (name: trial-42 or preset-resnet24;
`studies/<study>/<name>/` for the default storage), so that the file and that folder travel together:
model.pt (weights, spec, recipe, class names, normalisation), history.csv (per epoch: train loss and accuracy; test loss and accuracy after
every tenth of the run, for the curves, nothing being chosen on them),
metrics.json, curves.html (self-contained: plotly inlined, so it renders offline and from the
dashboard) and, while it runs, the checkpoint a `--resume` continues from. The results go on the
study (system attr `nas:retrain:<name>` for nas, one line in user attr `retrain:<name>` for people)
and the files as study artifacts, since Optuna refuses every write to a finished trial; the
trial's dashboard note links them. A second retrain of the same name
keeps the first unless told (`--replace`), and then replaces it, artifacts included.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.arch import ArchSpec
from nas.count import count_macs, count_params, fit_width
from nas.errors import NasError
from nas.files import check_writable, clean_leftovers, replaced
from nas.recipe import Recipe
from nas.space import load_preset, parse_space, preset_width_multiple
from nas.study import (REJECTED, RETRAIN_PREFIX, artifact_dir, repeat, set_study_system_attr, study_home, study_metric,
                       study_space, study_system_attrs, study_url, trial_arch, trial_recipe)  # fmt: skip

CHECKPOINT_EVERY = 5
FIT_SUFFIX = "-fit"  # a preset scaled to the study's limits
CHECKPOINT = "checkpoint.pt"
OUTPUTS = ("model.pt", "history.csv", "metrics.json", "curves.html")


@dataclass
class Target:
    name: str  # trial-42, preset-resnet24
    spec: ArchSpec
    recipe: Recipe
    trial: FrozenTrial | None = None


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise NasError(f"study {study.study_name!r} has no trial {number} (its trials are 0-{len(trials) - 1}).")
    return trials[number]


def trial_target(study: optuna.Study, number: int, shape: dict[str, int]) -> Target:
    """The exact ArchSpec and Recipe a trial trained, rebuilt from its params and the space the
    study stored (not the file on disk, which may have changed since)."""
    trial = find_trial(study, number)
    reason = trial.user_attrs.get("reason")
    arch, recipe_dict = trial_arch(trial), trial_recipe(trial)
    if reason in REJECTED or arch is None:
        raise NasError(f"trial {number} was never trained ({reason or trial.state.name}); pick a trained trial.")
    attrs = study.user_attrs
    space = parse_space(study_space(study), Path(attrs.get("space_path", "space.yaml")))
    spec, recipe = space.from_params(trial.params, **shape)
    if attrs.get("fill_budget"):
        spec = fit_width(spec, attrs["budget"], attrs.get("max_macs"), space.width_multiple)
    if spec.to_dict() != arch or recipe.to_dict() != recipe_dict:
        raise NasError(f"trial {number}'s params no longer rebuild what it trained (was the study made by "
                         f"another version of nas, or on other data?).")  # fmt: skip
    return Target(f"trial-{number}", spec, recipe, trial)


def preset_target(name: str, shape: dict[str, int], fit: tuple[int, int | None] | None = None) -> Target:
    """A preset adapted to the data; with `fit` (budget, MAC limit or None), its widths scaled to fill
    them (`fit_width`, in steps of the preset's `width_multiple`): the hand design at the size a
    search had, named preset-<name>-fit, so a report sets the search's best against it like for like."""
    preset, spec, recipe = load_preset(name)
    spec = ArchSpec.from_dict({**spec.to_dict(), **shape})
    if fit is None:
        return Target(preset_name(preset, fitted=False), spec, recipe)
    return Target(preset_name(preset, fitted=True), fit_width(spec, *fit, preset_width_multiple(name)), recipe)


def preset_name(preset: str, *, fitted: bool) -> str:
    return f"preset-{preset}{FIT_SUFFIX * fitted}"


def study_limits(study: optuna.Study) -> tuple[int, int | None]:
    """(parameter budget, MAC limit or None) a study searched under."""
    attrs = study.user_attrs
    if "budget" not in attrs:
        raise NasError(f"study {study.study_name!r} records no parameter budget to fit a preset to.")
    return int(attrs["budget"]), attrs.get("max_macs")


def seeded(target: Target, seed: int | None) -> Target:
    """`target` trained with another seed than its recipe's, under a name of its own (trial-17-seed1),
    so that a second seed is stored beside the first rather than replacing it."""
    if seed is None or seed == target.recipe.seed:
        return target
    return replace(target, name=seeded_name(target.name, seed, target.recipe.seed), recipe=replace(target.recipe, seed=seed))


def seeded_name(name: str, seed: int | None, recipe_seed: int) -> str:
    return name if seed is None or seed == recipe_seed else f"{name}-seed{seed}"


def base_name(name: str) -> str:
    """trial-17 for trial-17-seed1: the net a retrain of another seed belongs to."""
    head, _, tail = name.rpartition("-seed")
    return head if head and tail.isdigit() else name


def best_trials(study: optuna.Study, k: int) -> list[int]:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not repeat(t)]
    if not complete:
        raise NasError(f"study {study.study_name!r} has no completed trial yet.")
    return [t.number for t in sorted(complete, key=lambda t: -t.value)[:k]]


def default_out(study: optuna.Study, name: str) -> Path:
    return study_home(study.study_name, study_url(study)) / name


def kept_file(study: optuna.Study, name: str, filename: str) -> Path | None:
    """Where a retrain's file is on this machine: in the folder it was written to, in the study's own
    folder beside its storage (a study copied elsewhere), or in the study's artifacts; None if nowhere."""
    r = retrains(study).get(name, {})
    places = [Path(r["dir"]) / filename] if r.get("dir") else []
    places.append(default_out(study, name) / filename)
    if r.get("artifacts", {}).get(filename):
        places.append(artifact_dir(study.study_name, study_url(study)) / r["artifacts"][filename])
    return next((p for p in places if p.is_file()), None)


def retrains(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """name -> results of every retrain stored on the study (older studies kept the dicts in user attrs)."""
    found = {k.removeprefix(RETRAIN_PREFIX): v for k, v in study.user_attrs.items()
             if k.startswith(RETRAIN_PREFIX) and isinstance(v, dict)}  # fmt: skip
    system = f"nas:{RETRAIN_PREFIX}"
    found.update({k.removeprefix(system): v for k, v in study_system_attrs(study).items() if k.startswith(system)})
    return found


def describe(r: dict[str, Any]) -> str:
    """'test accuracy 0.9312 (flip-TTA 0.9350) after 200 epochs': a stored retrain result."""
    return (f"test accuracy {r['retrain_test_acc']:.4f} (flip-TTA {r['retrain_test_acc_tta']:.4f}) "
            f"after {n_epochs(r['retrain_epochs'])}")  # fmt: skip


def n_epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


# ------------------------------------------------------------------------------- where a run starts


def checkpoint_progress(path: Path, replace: bool = False) -> tuple[int, int]:
    """(epochs done, epochs of the run) in a retrain checkpoint; (0, 0) where there is none, or where
    it cannot be read (cut short, empty) and the run starts over anyway (`replace`)."""
    from nas.train import checkpoint_progress as progress

    if not path.exists():
        return 0, 0
    try:
        return progress(path)
    except NasError as e:
        if replace:
            return 0, 0
        raise NasError(f"{e}; it is damaged (cut short or empty): pass --replace to start over.") from None


def start_epoch(study: optuna.Study, name: str, out: Path, *, resume: bool, replace: bool) -> int | None:
    """Where a retrain of `name` into `out` starts: the epoch an interrupted run's checkpoint reached
    (--resume; all of them where it was stopped between its last epoch and its records, and then it
    only tests and records), 0 (from scratch; with --resume, where there is nothing to resume, which
    the run says), or None: it was retrained into `out` before and is kept. Refuses where starting
    would throw work away without being asked to: an interrupted run's checkpoint."""
    done, total = checkpoint_progress(out / CHECKPOINT, replace)
    interrupted = 0 < done <= total  # a finished run deletes its checkpoint once it has recorded its results
    earlier = retrains(study).get(name)
    if resume and interrupted:
        return done
    if interrupted and not replace:
        if done == total:
            raise NasError(f"{name}: a retrain trained all {total} epochs in {out} but was stopped before its test "
                           f"and records; pass --resume to test and record it (no epoch is trained again), or "
                           f"--replace to start over.")  # fmt: skip
        raise NasError(f"{name}: an interrupted retrain left a checkpoint after epoch {done} of {total} in {out}; "
                         f"pass --resume to continue it, or --replace to start over.")  # fmt: skip
    if earlier and Path(earlier["dir"]).resolve() == out.resolve() and not replace:
        return None
    return 0


def check_outputs(study: optuna.Study, out: Path) -> None:
    """Before the data is loaded and anything trains: the run's folder and the study's artifact folder
    take files (a read-only place is one line now, not a traceback after the last epoch), and what a
    killed run left half-written there is removed."""
    artifacts = artifact_dir(study.study_name, study_url(study))
    for folder, what in ((out, "the retrain's files"), (artifacts, "the study's artifacts")):
        check_writable(folder, what)
        clean_leftovers(folder)


def kept(study: optuna.Study, name: str) -> str:
    """What is said of a retrain that is done and kept."""
    r = retrains(study)[name]
    return f"{name}: already retrained in {r['dir']}, {describe(r)}; kept. Pass --replace to retrain it again."


# ------------------------------------------------------------------------------------------ retrain


def say(line: str) -> None:
    """Print a progress line now: redirected to a log file, stdout would hold it back for minutes."""
    print(line, flush=True)


def retrain(study: optuna.Study, target: Target, data: Any, *, epochs: int | None = None, seed: int | None = None,
            out: Path | None = None, resume: bool = False, replace_earlier: bool = False,
            device: str | None = None, compile: bool = False, precision: str | None = None,
            deterministic: bool = False, log: Callable[[str], None] = say) -> dict[str, Any]:  # fmt: skip
    """Train `target` on `data` (nas.data.Dataset), test it, write and attach its outputs. A target
    retrained into `out` before is kept (its stored results are returned) unless `replace_earlier`."""
    from nas.data import test_split
    from nas.device import resolve_device
    from nas.train import fit

    out = out or default_out(study, target.name)
    ckpt = out / CHECKPOINT
    start = start_epoch(study, target.name, out, resume=resume, replace=replace_earlier)
    earlier = retrains(study).get(target.name)
    if start is None:
        log(kept(study, target.name))
        return earlier
    check_outputs(study, out)
    total = checkpoint_progress(ckpt)[1] if start else None
    recipe = replace(target.recipe, epochs=epochs or total or target.recipe.epochs,  # resumed: that run's length
                     precision=precision or target.recipe.precision,
                     seed=target.recipe.seed if seed is None else seed)  # fmt: skip
    if total and total != recipe.epochs:
        raise NasError(f"{target.name}: the checkpoint in {out} is from a {total}-epoch run, not {recipe.epochs}; "
                         f"resume without --epochs, or pass --replace to start over.")  # fmt: skip
    dev = resolve_device(device)
    split = test_split(data).to(dev, batch_size=recipe.batch_size)
    log(f"retraining {target.name}: {target.spec.describe()} | {count_params(target.spec):,} params | "
        f"{n_epochs(recipe.epochs)} on {len(split.train_y):,} images | {dev}")  # fmt: skip
    if start == recipe.epochs:
        log(f"  the checkpoint holds all {recipe.epochs} epochs ({ckpt}): testing and recording it")
    elif start:
        log(f"  resuming from the checkpoint after epoch {start} of {recipe.epochs} ({ckpt})")
    elif resume:
        log(f"  no interrupted retrain to resume in {out}: starting from epoch 1")
    if earlier:
        log(f"  replacing the earlier retrain in {earlier['dir']}: {describe(earlier)}")

    # The test set is scored for the curves only (nothing is chosen on it): ten times a run, not
    # every epoch, which on a CPU cost 8% of an epoch each time.
    score_every = max(1, recipe.epochs // 10)

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        if epoch == 1 or not math.isnan(m["val_acc"]):
            test = "" if math.isnan(m["val_acc"]) else f"test {m['val_acc']:.4f}  "
            log(f"  epoch {epoch:>4}/{recipe.epochs}  loss {m['train_loss']:.4f}  train {m['train_acc']:.4f}  "
                f"{test}{m['seconds']:.1f} s")  # fmt: skip

    t0 = time.perf_counter()
    try:
        result = fit(target.spec, recipe, split, device=dev, on_epoch=on_epoch, checkpoint=ckpt,
                     checkpoint_every=CHECKPOINT_EVERY, resume=bool(start), compile=compile,
                     deterministic=deterministic, score_every=score_every)  # fmt: skip
        earlier_seconds = sum(h.get("seconds", 0.0) for h in result.history[:start or 0])  # from the checkpoint
        seconds = time.perf_counter() - t0 + earlier_seconds
        if result.status != "complete":
            raise NasError(f"the retrain of {target.name} ended with status {result.status}: {result.message}")
        metrics = _finish(study, target, data, split, result, recipe, out, seconds, dev, deterministic, earlier)
    except KeyboardInterrupt:
        log(f"\n{target.name}: interrupted. " + interrupted_at(ckpt, recipe.epochs, replace_earlier))
        raise
    ckpt.unlink(missing_ok=True)  # recorded: a checkpoint left behind would mean an interrupted run
    resumed = f", {earlier_seconds:.0f} s of them before the resume" if start else ""
    log(f"{target.name}: {describe(metrics)} in {seconds:.0f} s{resumed} -> {out}")
    return metrics


def interrupted_at(ckpt: Path, epochs: int, replacing: bool) -> str:
    """What an interrupted retrain says: what its checkpoint holds and how to go on from it."""
    done, _ = checkpoint_progress(ckpt)
    instead = " instead of --replace" if replacing else ""
    if done == epochs:
        return (f"All {epochs} epochs are trained and checkpointed; the test and the records were not finished: "
                f"run the same command with --resume{instead} to test and record it (no epoch is trained again).")
    if done:
        return (f"The checkpoint holds epochs 1-{done} of {epochs}: run the same command with --resume{instead} to "
                f"continue from epoch {done + 1}.")
    return f"No checkpoint yet (one is written every {CHECKPOINT_EVERY} epochs): nothing to resume."


def _finish(study: optuna.Study, target: Target, data: Any, split: Any, result: Any, recipe: Recipe, out: Path,
            seconds: float, dev: Any, deterministic: bool, earlier: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """Test the trained model, write its files (each to a temporary name, then renamed: a kill leaves
    the earlier file whole) and record them on the study; returns the results."""
    import pandas as pd
    import torch

    from nas.train import evaluate

    tta = evaluate(result.model, data.test_x, data.test_y, split.mean, split.std, tta=True,
                   precision=result.precision)
    history = _on_test(result.history)
    metrics = {
        "retrain_test_acc": result.final["val_acc"],
        "retrain_test_acc_tta": tta["acc"],
        "retrain_epochs": recipe.epochs,
        "retrain_seconds": round(seconds, 1),  # all epochs, a resumed run's earlier ones included
        "test_loss": result.final["val_loss"],
        "params": count_params(target.spec),
        "macs": count_macs(target.spec),
        study_metric(study): target.trial.value if target.trial else None,  # the proxy's score, by its name
        "seed": recipe.seed,
        "dataset": data.name,
        "device": str(dev),
        "precision": result.precision,
        "deterministic": deterministic,
        "spec": target.spec.to_dict(),
        "recipe": recipe.to_dict(),
    }
    with replaced(out / "model.pt") as tmp:
        torch.save({"model": result.model.state_dict(), "spec": target.spec.to_dict(), "recipe": recipe.to_dict(),
                    "classes": data.classes, "mean": split.mean, "std": split.std}, tmp)  # fmt: skip
    with replaced(out / "history.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    with replaced(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    write_curves(history, out / "curves.html", f"{study.study_name} {target.name}: {describe(metrics)}")
    metrics["dir"] = str(out)
    metrics["artifacts"] = _upload(study, target.name, out, (earlier or {}).get("artifacts", {}))
    set_study_system_attr(study, f"nas:{RETRAIN_PREFIX}{target.name}", metrics)
    study.set_user_attr(f"{RETRAIN_PREFIX}{target.name}", f"{describe(metrics)}; {out}")  # what the dashboard lists
    return metrics


def _on_test(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """fit() calls whatever it scores on 'val'; a retrain scores on the test set: say so."""
    rename = {"val_loss": "test_loss", "val_acc": "test_acc"}
    return [{rename.get(k, k): v for k, v in row.items()} for row in history]


def _upload(study: optuna.Study, name: str, out: Path, earlier: dict[str, str]) -> dict[str, str]:
    """Attach the outputs as study artifacts named <name>-<file>; returns file -> artifact id. A
    file attached by an earlier retrain of the same name gets the new content under its old id,
    so the dashboard lists each file once."""
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    store_dir = artifact_dir(study.study_name, study_url(study))
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    attached = {a.artifact_id for a in get_all_artifact_meta(study)}
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for filename in OUTPUTS:
            if earlier.get(filename) in attached:
                # FileSystemArtifactStore keeps an artifact as the file <base>/<id>; its write() rewrites it
                # in place, so the new content is copied beside it and renamed over it.
                with replaced(store_dir / earlier[filename]) as tmp:
                    shutil.copyfile(out / filename, tmp)
                ids[filename] = earlier[filename]
                continue
            named = Path(tmp) / f"{name}-{filename}"  # the artifact takes the file's name
            shutil.copyfile(out / filename, named)
            ids[filename] = upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)
    return ids


def write_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss, accuracy (train and test) and the learning rate per epoch, as one self-contained HTML
    file: plotly is inlined (~4.6 MB), so it renders offline, and when opened from the dashboard,
    which serves an artifact alone, with no file beside it (`nas report` draws all retrains on one
    page that shares its folder's plotly.min.js)."""
    from plotly.subplots import make_subplots

    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "accuracy", "learning rate"))
    for col, metric in ((1, "loss"), (2, "acc")):
        for split in ("train", "test"):
            fig.add_scatter(x=epochs, y=[h[f"{split}_{metric}"] for h in history], name=f"{split} {metric}",
                            mode="lines+markers", connectgaps=True,  # test: scored every few epochs
                            row=1, col=col)  # markers: a 1-epoch run is a point
    if all("lr" in h for h in history):
        fig.add_scatter(x=epochs, y=[h["lr"] for h in history], name="learning rate", mode="lines+markers", row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, margin={"t": 90})
    with replaced(path) as tmp:
        fig.write_html(tmp, include_plotlyjs=True, config={"displaylogo": False})
