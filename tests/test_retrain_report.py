import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import nas.retrain as rt
from nas.cli import main
from nas.data import load_dataset
from nas.predict import load_model
from nas.report import note
from nas.study import counts, load_study

STUDY = "tiny-synthetic-5M"
SMALL_PRESET = "arch:\n  blocks: [1, 1]\n  channels: [8, 16]\nrecipe:\n  optimizer: sgd\n  lr: 0.05\n  epochs: 2\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A finished 4-trial search, made once; tests run inside its folder."""
    root = tmp_path_factory.mktemp("smoke")
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["search", "--space", "tiny", "--dataset", "synthetic:200", "--proxy-epochs", "2", "--gpus", "cpu",
                     "--seed", "1", "--pruner", "none", "--trials", "4"]) == 0  # fmt: skip
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def here(smoke, monkeypatch):
    monkeypatch.chdir(smoke)
    return smoke


def complete_trials():
    return [t.number for t in load_study(None, STUDY).trials if counts(t) and t.value is not None]


def test_retrain_writes_files_results_and_artifacts(here, capsys):
    number = complete_trials()[0]
    assert main(["retrain", "--trial", str(number), "--epochs", "2"]) == 0
    out_dir = here / "studies" / STUDY / f"trial-{number}"
    for name in ("model.pt", "history.csv", "metrics.json", "curves.html"):
        assert (out_dir / name).stat().st_size > 0
    study = load_study(None, STUDY)
    r = study.user_attrs[f"retrain:trial-{number}"]
    assert r["retrain_epochs"] == 2 and 0 <= r["retrain_test_acc"] <= 1 and 0 <= r["retrain_test_acc_tta"] <= 1
    assert r["retrain_seconds"] > 0 and r["proxy_val_acc"] == study.trials[number].value
    assert json.loads((out_dir / "metrics.json").read_text())["retrain_test_acc"] == r["retrain_test_acc"]
    history = (out_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 3
    # uploaded as study artifacts, named after the trial
    from optuna.artifacts import get_all_artifact_meta

    names = {a.filename for a in get_all_artifact_meta(study)}
    assert {f"trial-{number}-{f}" for f in rt.OUTPUTS} <= names
    assert set(r["artifacts"]) == set(rt.OUTPUTS)
    assert all((here / "studies" / STUDY / "artifacts" / a).exists() for a in r["artifacts"].values())
    # the model is the one the trial describes, and the dashboard note tells the story
    model, saved = load_model(out_dir / "model.pt", torch.device("cpu"))
    assert saved["spec"] == study.trials[number].user_attrs["arch"] and saved["classes"][0] == "class0"
    from optuna_dashboard import get_note

    assert f"trial-{number}" in get_note(study) and "Retrained in full" in note(study)


def test_retrain_resumes_after_a_kill_and_reaches_the_same_result(here, monkeypatch):
    number = complete_trials()[1]
    study = load_study(None, STUDY)
    data = load_dataset("synthetic:200")
    target = rt.trial_target(study, number, data.shape)
    monkeypatch.setattr(rt, "CHECKPOINT_EVERY", 1)
    straight = rt.retrain(study, target, data, epochs=4, out=here / "straight", log=lambda _: None)

    class Killed(Exception):
        pass

    def die_at_epoch_3(line):
        if "epoch    3/4" in line:
            raise Killed

    with pytest.raises(Killed):
        rt.retrain(study, target, data, epochs=4, out=here / "killed", log=die_at_epoch_3)
    resumed = rt.retrain(study, target, data, epochs=4, out=here / "killed", resume=True, log=lambda _: None)
    for key in ("retrain_test_acc", "retrain_test_acc_tta", "test_loss"):
        assert resumed[key] == straight[key]
    strip = lambda p: [r.split(",")[:6] for r in p.read_text().splitlines()]  # noqa: E731  (no timings)
    assert strip(here / "killed" / "history.csv") == strip(here / "straight" / "history.csv")


def test_predict_needs_a_retrained_trial(here, capsys):  # before the report test retrains them all
    study = load_study(None, STUDY)
    never = next(t.number for t in study.trials if f"retrain:trial-{t.number}" not in study.user_attrs)
    assert main(["predict", "--trial", str(never), "--images", "."]) == 2
    assert "has not been retrained" in capsys.readouterr().err


def test_retrain_a_preset_into_the_same_study(here, capsys):
    (here / "small.yaml").write_text(SMALL_PRESET)
    assert main(["retrain", "--preset", str(here / "small.yaml")]) == 0
    r = load_study(None, STUDY).user_attrs["retrain:preset-small"]
    assert r["retrain_epochs"] == 2 and r["proxy_val_acc"] is None and r["spec"]["channels"] == [8, 16]
    assert (here / "studies" / STUDY / "preset-small" / "model.pt").exists()


def test_report_writes_tables_figures_and_the_proxy_fidelity(here, capsys):
    done = {k for k in load_study(None, STUDY).user_attrs if k.startswith("retrain:trial-")}
    for number in complete_trials():
        if f"retrain:trial-{number}" not in done:
            assert main(["retrain", "--trial", str(number), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["report", "--out", "rep"]) == 0
    out = capsys.readouterr().out
    assert "proxy fidelity over" in out and "Kendall tau" in out
    rep = here / "rep"
    for name in ("leaderboard.csv", "leaderboard.md", "accuracy_vs_params.html", "history.html", "intermediate.html"):
        assert (rep / name).stat().st_size > 0
    rows = list(csv.DictReader(open(rep / "leaderboard.csv")))
    assert len(rows) == 5 and {r["name"] for r in rows} >= {"preset-small"}
    assert all(r["retrain_test_acc"] for r in rows)
    assert "Spearman" in (rep / "leaderboard.md").read_text()
    assert "budget 5,000,000" in (rep / "accuracy_vs_params.html").read_text()


def test_fidelity_is_the_rank_correlation_of_proxy_and_retrain():
    import pandas as pd

    from nas.report import fidelity

    df = pd.DataFrame({"trial": [0, 1, 2, 3, None], "proxy_val_acc": [0.1, 0.2, 0.3, 0.4, None],
                       "retrain_test_acc": [0.5, 0.7, 0.6, 0.9, 0.95]})  # fmt: skip
    f = fidelity(df)
    assert f["trials"] == 4 and f["spearman"] == pytest.approx(0.8) and f["kendall_tau"] == pytest.approx(2 / 3)
    assert fidelity(df.head(2)) is None


def test_predict_writes_a_correct_csv(here, capsys):
    number = next(int(k.split("-")[-1]) for k in load_study(None, STUDY).user_attrs if k.startswith("retrain:trial-"))
    images = here / "unlabeled"
    (images / "sub").mkdir(parents=True, exist_ok=True)
    data = load_dataset("synthetic:200")
    for i in range(6):
        img = data.test_x[i].permute(1, 2, 0).numpy()
        path = images / ("sub" if i % 2 else "") / f"img{i}.png"
        Image.fromarray(img if i != 5 else np.repeat(np.repeat(img, 2, 0), 2, 1)).save(path)  # one at 64px
    assert main(["predict", "--trial", str(number), "--images", str(images), "--out", "pred.csv"]) == 0
    rows = list(csv.reader(open(here / "pred.csv")))
    assert rows[0] == ["ID", "Label"] and sorted(r[0] for r in rows[1:]) == [f"img{i}" for i in range(6)]
    model, saved = load_model(here / "studies" / STUDY / f"trial-{number}" / "model.pt", torch.device("cpu"))
    from nas.train import predict

    expected = predict(model, data.test_x[:5], saved["mean"], saved["std"]).argmax(1).tolist()
    got = {r[0]: r[1] for r in rows[1:]}
    assert [got[f"img{i}"] for i in range(5)] == [saved["classes"][c] for c in expected]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["retrain", "--trial", "999"], "has no trial 999"),
        (["retrain", "--trial", "0", "--study", "nope"], "no study 'nope'"),
        (["report", "--study", "nope"], "no study 'nope'"),
        (["predict", "--trial", "999", "--images", "."], "has no trial 999"),
        (["retrain", "--trial", "0", "--epochs", "0"], "--epochs"),
    ],
)
def test_unknown_trial_or_study_is_one_line_and_exit_2(here, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_study_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert "no study found" in capsys.readouterr().err


def test_importances_find_the_feature_that_drives_the_score():
    import random

    import optuna

    from nas.arch import ArchSpec
    from nas.count import count_macs, count_params
    from nas.recipe import Recipe
    from nas.report import importance_figure, importances

    rng = random.Random(0)
    study = optuna.create_study(direction="maximize")
    for _ in range(40):
        depth = rng.randint(1, 8)
        spec = ArchSpec(blocks=[depth, 1], channels=[16, rng.choice([16, 32])], kernel=rng.choice([3, 5]))
        recipe = Recipe(lr=10 ** rng.uniform(-2, -0.5), batch_size=rng.choice([64, 128]))
        attrs = {"arch": spec.to_dict(), "recipe": recipe.to_dict(), "params": count_params(spec),
                 "macs": count_macs(spec)}  # fmt: skip
        study.add_trial(optuna.trial.create_trial(value=depth / 8 + rng.gauss(0, 0.01), user_attrs=attrs))
    imp = importances(study)
    assert max(imp, key=imp.get) == "depth (blocks)"
    assert importance_figure(study, imp).data[0].orientation == "h"
    few = optuna.create_study(direction="maximize")
    assert importances(few) is None
