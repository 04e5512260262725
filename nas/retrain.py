"""`nas retrain`: train a trial's configuration (or a preset) in full on the training + validation
images, test it on the official test set (plain and flip-TTA), and keep everything.

Written to `studies/<study>/<name>/` (name: trial-42 or preset-resnet24): model.pt (weights, spec,
recipe, class names, normalisation), history.csv, metrics.json, curves.html and the checkpoint a
`--resume` continues from. The results go on the study as user attr `retrain:<name>` and the files
as study artifacts: Optuna refuses every write to a finished trial, attrs and artifacts alike.
"""

from __future__ import annotations

import json
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
from nas.recipe import Recipe
from nas.space import load_preset, parse_space
from nas.study import REJECTED, STUDIES_DIR

CHECKPOINT_EVERY = 5
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
    if reason in REJECTED or "arch" not in trial.user_attrs:
        raise NasError(f"trial {number} was never trained ({reason or trial.state.name}); pick a trained trial.")
    attrs = study.user_attrs
    space = parse_space(attrs["space"], Path(attrs.get("space_path", "space.yaml")))
    spec, recipe = space.from_params(trial.params, **shape)
    if attrs.get("fill_budget"):
        spec = fit_width(spec, attrs["budget"], attrs.get("max_macs"))
    if spec.to_dict() != trial.user_attrs["arch"] or recipe.to_dict() != trial.user_attrs["recipe"]:
        raise NasError(f"trial {number}'s params no longer rebuild what it trained (was the study made by "
                         f"another version of nas, or on other data?).")  # fmt: skip
    return Target(f"trial-{number}", spec, recipe, trial)


def preset_target(name: str, shape: dict[str, int]) -> Target:
    preset, spec, recipe = load_preset(name)
    return Target(f"preset-{preset}", ArchSpec.from_dict({**spec.to_dict(), **shape}), recipe)


def best_trials(study: optuna.Study, k: int) -> list[int]:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise NasError(f"study {study.study_name!r} has no completed trial yet.")
    return [t.number for t in sorted(complete, key=lambda t: -t.value)[:k]]


def retrain(study: optuna.Study, target: Target, data: Any, *, epochs: int | None = None, seed: int | None = None,
            out: Path | None = None, resume: bool = False, device: str | None = None, compile: bool = False,
            precision: str | None = None, deterministic: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Train `target` on `data` (nas.data.Dataset), test it, write and attach its outputs."""
    import torch

    from nas.data import test_split
    from nas.device import resolve_device
    from nas.train import evaluate, fit

    recipe = replace(target.recipe, epochs=epochs or target.recipe.epochs, precision=precision or target.recipe.precision,
                     seed=target.recipe.seed if seed is None else seed)  # fmt: skip
    out = out or STUDIES_DIR / study.study_name / target.name
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not resume:
        log(f"{ckpt} exists: starting over (pass --resume to continue it)")
    dev = resolve_device(device)
    split = test_split(data).to(dev)
    log(f"retraining {target.name}: {target.spec.describe()} | {count_params(target.spec):,} params | "
        f"{recipe.epochs} epochs on {len(split.train_y):,} images | {dev}")  # fmt: skip

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        if epoch == 1 or epoch % max(1, recipe.epochs // 10) == 0 or epoch == recipe.epochs:
            log(f"  epoch {epoch:>4}/{recipe.epochs}  loss {m['train_loss']:.4f}  train {m['train_acc']:.4f}  "
                f"test {m['val_acc']:.4f}  {m['seconds']:.1f} s")  # fmt: skip

    start = time.perf_counter()
    result = fit(target.spec, recipe, split, device=dev, on_epoch=on_epoch, checkpoint=ckpt,
                 checkpoint_every=CHECKPOINT_EVERY, resume=resume, compile=compile, deterministic=deterministic)  # fmt: skip
    seconds = time.perf_counter() - start
    if result.status != "complete":
        raise NasError(f"the retrain of {target.name} ended with status {result.status}: {result.message}")
    tta = evaluate(result.model, data.test_x, data.test_y, split.mean, split.std, tta=True, precision=result.precision)
    metrics = {
        "retrain_test_acc": result.final["val_acc"],
        "retrain_test_acc_tta": tta["acc"],
        "retrain_epochs": recipe.epochs,
        "retrain_seconds": round(seconds, 1),
        "test_loss": result.final["val_loss"],
        "params": count_params(target.spec),
        "macs": count_macs(target.spec),
        "proxy_val_acc": target.trial.value if target.trial else None,
        "seed": recipe.seed,
        "dataset": data.name,
        "device": str(dev),
        "precision": result.precision,
        "deterministic": deterministic,
        "spec": target.spec.to_dict(),
        "recipe": recipe.to_dict(),
    }
    torch.save({"model": result.model.state_dict(), "spec": target.spec.to_dict(), "recipe": recipe.to_dict(),
                "classes": data.classes, "mean": split.mean, "std": split.std}, out / "model.pt")  # fmt: skip
    _write_history(result.history, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_curves(result.history, out / "curves.html", f"{study.study_name} {target.name}")
    metrics["dir"] = str(out)
    metrics["artifacts"] = _upload(study, target.name, out)
    study.set_user_attr(f"retrain:{target.name}", metrics)
    log(f"{target.name}: test accuracy {metrics['retrain_test_acc']:.4f} (flip-TTA {tta['acc']:.4f}) "
        f"after {recipe.epochs} epochs in {seconds:.0f} s -> {out}")  # fmt: skip
    return metrics


def retrains(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """name -> results of every retrain stored on the study."""
    return {k.split(":", 1)[1]: v for k, v in study.user_attrs.items() if k.startswith("retrain:")}


def artifact_dir(study: optuna.Study) -> Path:
    return STUDIES_DIR / study.study_name / "artifacts"


def _upload(study: optuna.Study, name: str, out: Path) -> dict[str, str]:
    """Upload the outputs as study artifacts named <name>-<file>; returns file -> artifact id."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store_dir = artifact_dir(study)
    store_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(store_dir))
    ids = {}
    with tempfile.TemporaryDirectory() as tmp:
        for filename in OUTPUTS:
            named = Path(tmp) / f"{name}-{filename}"  # the artifact takes the file's name
            shutil.copyfile(out / filename, named)
            ids[filename] = upload_artifact(artifact_store=store, file_path=str(named), study_or_trial=study)
    return ids


def _write_history(history: list[dict[str, float]], out: Path) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(out / "history.csv", index=False)


def write_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train and test, as one self-contained plotly HTML file."""
    from plotly.subplots import make_subplots

    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, metric in ((1, "loss"), (2, "acc")):
        for split, name in (("train", "train"), ("val", "test")):
            fig.add_scatter(x=epochs, y=[h[f"{split}_{metric}"] for h in history], name=f"{name} {metric}",
                            mode="lines", row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title)
    fig.write_html(path, include_plotlyjs="cdn")
