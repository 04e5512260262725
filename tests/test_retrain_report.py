import csv
import json
import math
import re
import signal

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

import nas.retrain as rt
from nas.cli import main
from nas.data import load_dataset
from nas.predict import load_model
from nas.report import note
from nas.study import counts, load_study, trial_arch

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


def script_sources(html: str) -> list[str]:
    """The scripts an HTML page loads from elsewhere: none may be on the network."""
    return re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html)


def complete_trials():
    return [t.number for t in load_study(None, STUDY).trials if counts(t) and t.value is not None]


def dashboard(here):
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    return wsgi(f"sqlite:///{here}/studies/{STUDY}.db", FileSystemArtifactStore(f"{here}/studies/{STUDY}/artifacts"))


def test_retrain_writes_files_results_and_artifacts(here, capsys, http_get):
    number = complete_trials()[0]
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert main(["retrain", "--trial", str(number), "--epochs", "2"]) == 0
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler  # a kill stops it as Ctrl-C does
    finally:
        signal.signal(signal.SIGTERM, before)
    out = capsys.readouterr().out
    assert f"study {STUDY} in sqlite:///studies/{STUDY}.db (the only one in studies/)" in out
    assert f"optuna-dashboard sqlite:///studies/{STUDY}.db --artifact-dir studies/{STUDY}/artifacts" in out
    out_dir = here / "studies" / STUDY / f"trial-{number}"
    for name in ("model.pt", "history.csv", "metrics.json", "curves.html"):
        assert (out_dir / name).stat().st_size > 0
    assert not (out_dir / "checkpoint.pt").exists()  # finished: nothing left for --resume
    study = load_study(None, STUDY)
    r = rt.retrains(study)[f"trial-{number}"]
    line = study.user_attrs[f"retrain:trial-{number}"]  # what the dashboard's attribute table shows: one line
    assert line.startswith("test accuracy ") and len(line) < 200
    assert r["retrain_epochs"] == 2 and 0 <= r["retrain_test_acc"] <= 1 and 0 <= r["retrain_test_acc_tta"] <= 1
    assert r["retrain_seconds"] > 0 and r["proxy_val_acc"] == study.trials[number].value
    assert json.loads((out_dir / "metrics.json").read_text())["retrain_test_acc"] == r["retrain_test_acc"]
    history = (out_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,train_acc,test_loss,test_acc,") and len(history) == 3
    curves = (out_dir / "curves.html").read_text()
    assert script_sources(curves) == [] and "Plotly.newPlot" in curves
    assert len(curves) > 1_000_000  # plotly itself, inlined: renders offline and from the dashboard
    # uploaded as study artifacts, named after the trial
    from optuna.artifacts import get_all_artifact_meta

    names = {a.filename for a in get_all_artifact_meta(study)}
    assert {f"trial-{number}-{f}" for f in rt.OUTPUTS} <= names
    assert set(r["artifacts"]) == set(rt.OUTPUTS)
    assert all((here / "studies" / STUDY / "artifacts" / a).exists() for a in r["artifacts"].values())
    # the model is the one the trial describes, and the dashboard note tells the story
    model, saved = load_model(out_dir / "model.pt", torch.device("cpu"))
    assert saved["spec"] == trial_arch(study.trials[number]) and saved["classes"][0] == "class0"
    from optuna_dashboard import get_note

    assert f"trial-{number}" in get_note(study) and "Retrained in full" in note(study)
    # the trial's note links its files, and the dashboard serves each link
    trial_note = get_note(optuna.Trial(study, study.trials[number]._trial_id))
    for filename, artifact_id in r["artifacts"].items():
        link = f"[{filename}](/artifacts/{study._study_id}/{artifact_id})"
        assert link in trial_note
        code, body = http_get(dashboard(here), f"/artifacts/{study._study_id}/{artifact_id}")
        assert code == 200 and body == (out_dir / filename).read_bytes()


def test_a_second_retrain_is_kept_unless_replaced_and_then_replaces_in_place(here, capsys):
    from optuna.artifacts import get_all_artifact_meta

    number = complete_trials()[0]  # retrained by the test above
    before = rt.retrains(load_study(None, STUDY))[f"trial-{number}"]
    assert main(["retrain", "--trial", str(number), "--epochs", "2"]) == 0
    assert f"trial-{number}: already retrained in" in capsys.readouterr().out
    study = load_study(None, STUDY)
    assert rt.retrains(study)[f"trial-{number}"] == before
    n_artifacts = len(get_all_artifact_meta(study))

    assert main(["retrain", "--trial", str(number), "--epochs", "1", "--replace"]) == 0
    assert "replacing the earlier retrain" in capsys.readouterr().out
    study = load_study(None, STUDY)
    after = rt.retrains(study)[f"trial-{number}"]
    assert after["retrain_epochs"] == 1 and after["artifacts"] == before["artifacts"]  # same ids, new content
    assert len(get_all_artifact_meta(study)) == n_artifacts  # the dashboard lists each file once
    history = here / "studies" / STUDY / "artifacts" / after["artifacts"]["history.csv"]
    assert len(history.read_text().splitlines()) == 2  # header + the one epoch of the new run

    assert main(["retrain", "--trial", str(number), "--resume"]) == 0  # nothing to resume, and done: kept
    assert f"trial-{number}: already retrained in" in capsys.readouterr().out


def test_an_interrupted_retrain_says_how_to_resume_and_is_not_thrown_away(here, monkeypatch):
    number = complete_trials()[1]
    study = load_study(None, STUDY)
    target = rt.trial_target(study, number, load_dataset("synthetic:200").shape)
    monkeypatch.setattr(rt, "CHECKPOINT_EVERY", 1)
    said = []

    def ctrl_c_in_epoch_3(line):
        said.append(line)
        if "epoch    2/3" in line:
            raise KeyboardInterrupt

    out = here / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        rt.retrain(study, target, load_dataset("synthetic:200"), epochs=3, out=out, log=ctrl_c_in_epoch_3)
    assert "The checkpoint holds epochs 1-2 of 3: run the same command with --resume to continue from epoch 3." in said[-1]
    with pytest.raises(ValueError, match="left a checkpoint after epoch 2 of 3 .* pass --resume to continue it"):
        rt.retrain(study, target, load_dataset("synthetic:200"), out=out, log=said.append)
    said.clear()
    resumed = rt.retrain(study, target, load_dataset("synthetic:200"), out=out, resume=True, log=said.append)
    assert any("resuming from the checkpoint after epoch 2 of 3" in line for line in said)
    assert resumed["retrain_epochs"] == 3  # the interrupted run's length, without --epochs
    said.clear()  # --resume where there is nothing to resume starts, and says so (scripts pass it always)
    rt.retrain(study, target, load_dataset("synthetic:200"), epochs=1, out=here / "fresh", resume=True, log=said.append)
    assert any("no interrupted retrain to resume in" in line and "starting from epoch 1" in line for line in said)


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
    import pandas as pd

    epochs = pd.read_csv(here / "killed" / "history.csv")["seconds"]
    assert len(epochs) == 4 and resumed["retrain_seconds"] >= round(epochs.sum(), 1) - 0.1  # every epoch, not this sitting's


def test_predict_needs_a_retrained_trial(here, capsys):  # before the report test retrains them all
    study = load_study(None, STUDY)
    never = next(t.number for t in study.trials if f"trial-{t.number}" not in rt.retrains(study))
    assert main(["predict", "--trial", str(never), "--images", "."]) == 2
    assert "has not been retrained" in capsys.readouterr().err


def test_retrain_a_preset_into_the_same_study(here, capsys):
    (here / "small.yaml").write_text(SMALL_PRESET)
    assert main(["retrain", "--preset", str(here / "small.yaml")]) == 0
    r = rt.retrains(load_study(None, STUDY))["preset-small"]
    assert r["retrain_epochs"] == 2 and r["proxy_val_acc"] is None and r["spec"]["channels"] == [8, 16]
    assert (here / "studies" / STUDY / "preset-small" / "model.pt").exists()


def test_a_preset_fitted_to_the_budget_and_a_second_seed_are_stored_beside_the_first(here, capsys, monkeypatch):
    from nas.count import count_params

    (here / "small.yaml").write_text(SMALL_PRESET.replace("arch:\n", "arch:\n  width_multiple: 1\n"))
    monkeypatch.setattr(rt, "study_limits", lambda study: (3_000, None))  # the smoke study's 5M would be slow to fill
    assert main(["retrain", "--preset", str(here / "small.yaml"), "--fit-budget", "--seed", "3", "--epochs", "1"]) == 0
    found = rt.retrains(load_study(None, STUDY))
    r = found["preset-small-fit-seed3"]
    assert r["seed"] == 3 and r["retrain_epochs"] == 1
    assert 2_700 <= r["params"] <= 3_000 and r["spec"]["channels"] != [8, 16]  # widths in steps of 1 fill the budget
    assert count_params(rt.preset_target(str(here / "small.yaml"), {}, (3_000, None)).spec) == r["params"]
    assert (here / "studies" / STUDY / "preset-small-fit-seed3" / "model.pt").exists()
    assert main(["retrain", "--trial", "0", "--fit-budget"]) == 2
    assert "use it with --preset" in capsys.readouterr().err


def test_a_seed_names_the_retrain_only_when_it_is_not_the_recipes():
    from nas.recipe import Recipe
    from nas.space import load_preset

    target = rt.preset_target("mlperf-tiny-resnet8", {})
    assert rt.seeded(target, None) is target and rt.seeded(target, Recipe().seed) is target
    other = rt.seeded(target, 1)
    assert other.name == "preset-mlperf-tiny-resnet8-seed1" and other.recipe.seed == 1 and other.spec == target.spec
    assert rt.base_name(other.name) == target.name and rt.base_name("trial-3") == "trial-3"
    assert rt.base_name("preset-my-seed-net") == "preset-my-seed-net"
    fitted = rt.preset_target("mlperf-tiny-resnet8", {}, (100_000, 25_000_000)).spec
    assert fitted.channels == (18, 36, 72) and fitted.stem_channels == 18  # its file: width_multiple 1
    assert load_preset("mlperf-tiny-resnet8")[1].channels == (16, 32, 64)


def test_report_writes_tables_figures_and_the_proxy_fidelity(here, capsys):
    done = set(rt.retrains(load_study(None, STUDY)))
    for number in complete_trials():
        if f"trial-{number}" not in done:
            assert main(["retrain", "--trial", str(number), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["report", "--out", "rep"]) == 0
    out = capsys.readouterr().out
    assert "proxy fidelity over" in out and "Kendall tau" in out
    rep = here / "rep"
    for name in ("leaderboard.csv", "leaderboard.md", "accuracy_vs_params.html", "accuracy_vs_macs.html",
                 "budget_check.html", "history.html", "intermediate.html"):  # fmt: skip
        assert (rep / name).stat().st_size > 0
    for html in set(rep.glob("*.html")) - {rep / "index.html"}:  # plotly from beside the figures, never the network
        assert script_sources(html.read_text()) == ["plotly.min.js"], html
    index = (rep / "index.html").read_text()  # the front page links every figure and says what was left out
    assert all(f'href="{f.name}"' in index for f in rep.glob("*.html") if f.name != "index.html")
    assert "No importances: 4 complete trials, 8 needed." in index and "Proxy fidelity over 4" in index
    for name in ("fidelity.html", "retrains.html"):  # proxy vs retrain; every retrain's test accuracy and lr
        assert (rep / name).stat().st_size > 0
    assert (rep / "plotly.min.js").stat().st_size > 1_000_000
    assert "no importances: 4 complete trials, 8 needed" in out
    rows = list(csv.DictReader(open(rep / "leaderboard.csv")))
    assert len(rows) == 6 and {r["name"] for r in rows} >= {"preset-small", "preset-small-fit-seed3"}
    assert all(r["retrain_test_acc"] for r in rows)
    assert "Spearman" in (rep / "leaderboard.md").read_text()
    assert "budget 5,000,000" in (rep / "accuracy_vs_params.html").read_text()
    assert {r["state"] for r in rows} == {"complete", "preset"}


def test_a_report_leaves_the_storage_byte_identical_unless_asked(here, capsys):
    db = here / "studies" / f"{STUDY}.db"
    before = db.read_bytes()
    assert main(["report", "--out", "rep2"]) == 0
    assert db.read_bytes() == before  # a report reads
    assert main(["report", "--out", "rep2", "--note"]) == 0
    refreshed = db.read_bytes()
    assert main(["report", "--out", "rep2", "--note"]) == 0
    assert db.read_bytes() == refreshed  # nothing changed, nothing written
    assert "refreshed where they changed" in capsys.readouterr().out


def test_a_retrained_trial_keeps_what_the_search_said_of_it(here):
    from optuna_dashboard import get_note, save_note

    from nas.report import write_note

    study = load_study(None, STUDY)
    number = next(int(k.split("-")[-1]) for k in rt.retrains(study) if k.startswith("trial-"))
    trial = optuna.Trial(study, study.trials[number]._trial_id)
    said = "**Pruned** by the median pruner after epoch 4 of 5: proxy_val_acc 0.4000."
    save_note(trial, said)  # what the search writes on a pruned trial, before any retrain
    write_note(study)
    text = get_note(trial)
    assert text.startswith(said) and text.count("### Retrained in full") == 1
    write_note(study)
    assert get_note(trial) == text


def test_a_study_copied_elsewhere_opens_with_its_files_and_says_what_was_not_kept(here, tmp_path, monkeypatch, capsys,
                                                                                  http_get):  # fmt: skip
    import shutil

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    from nas.report import write_note

    shutil.copytree(here / "studies", tmp_path / "handed" / "on")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///handed/on/{STUDY}.db"
    study = load_study(url, STUDY)
    number = next(int(k.split("-")[-1]) for k in rt.retrains(study) if k.startswith("trial-"))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(load_dataset("synthetic:200").test_x[0].permute(1, 2, 0).numpy()).save(images / "a.png")
    assert main(["predict", "--trial", str(number), "--storage", url, "--images", "images"]) == 0  # the model beside the copy
    assert main(["report", "--storage", url, "--note"]) == 0
    assert f"--artifact-dir handed/on/{STUDY}/artifacts" in capsys.readouterr().out
    app = wsgi(url, FileSystemArtifactStore(f"handed/on/{STUDY}/artifacts"))
    links = re.findall(r"\]\((/artifacts/[^)]+)\)", note(load_study(url, STUDY)))
    assert links and all(http_get(app, link)[0] == 200 for link in links)
    # A copy without the models: the note and predict say so, and what to run.
    r = rt.retrains(study)[f"trial-{number}"]
    (tmp_path / "handed" / "on" / STUDY / f"trial-{number}" / "model.pt").unlink()
    (tmp_path / "handed" / "on" / STUDY / "artifacts" / r["artifacts"]["model.pt"]).unlink()
    write_note(study)
    assert "not kept with the study: model.pt" in note(study)
    assert main(["predict", "--trial", str(number), "--storage", url, "--images", "images"]) == 2
    err = capsys.readouterr().err
    assert "kept no model.pt here" in err and f"nas retrain --trial {number} --replace --study {STUDY} --storage {url}" in err


def test_fidelity_is_the_rank_correlation_of_proxy_and_retrain_against_the_params_baseline():
    import pandas as pd

    from nas.report import fidelity

    df = pd.DataFrame({"trial": [0, 1, 2, 3, None, 5], "proxy": [0.1, 0.2, 0.3, 0.4, None, 0.9],
                       "retrain_test_acc": [0.5, 0.7, 0.6, 0.9, 0.95, 0.1], "retrain_epochs": [30, 30, 30, 30, 200, 30],
                       "params": [4, 3, 2, 1, 9, 5], "state": ["complete"] * 4 + ["preset", "pruned"]})  # fmt: skip
    f = fidelity(df)  # a preset has no proxy score; a pruned trial's is from fewer epochs
    assert f["trials"] == 4 and f["spearman"] == pytest.approx(0.8) and f["kendall_tau"] == pytest.approx(2 / 3)
    assert f["params_kendall_tau"] == pytest.approx(-2 / 3)  # the bigger nets retrained worse here
    assert f["retrain_epochs"] == [30] and f["warnings"] == []
    assert fidelity(df.head(2)) is None
    df.loc[3, "retrain_epochs"] = 10
    assert "differ in length (10, 30 epochs)" in fidelity(df)["warnings"][0]
    df["params"] = [1, 3, 2, 4, 9, 5]  # now the count ranks them exactly as their retrains
    f = fidelity(df)
    assert f["params_kendall_tau"] == pytest.approx(1.0)
    assert "parameter count alone ranks these retrains better than the proxy does (Kendall tau 1.000 against 0.667)" in f["warnings"][1]


def test_predict_writes_a_correct_csv(here, capsys):
    number = next(int(k.split("-")[-1]) for k in rt.retrains(load_study(None, STUDY)) if k.startswith("trial-"))
    images = here / "unlabeled"
    (images / "sub").mkdir(parents=True, exist_ok=True)
    data = load_dataset("synthetic:200")
    for i in range(6):
        img = data.test_x[i].permute(1, 2, 0).numpy()
        path = images / ("sub" if i % 2 else "") / f"img{i}.png"
        Image.fromarray(img if i != 5 else np.repeat(np.repeat(img, 2, 0), 2, 1)).save(path)  # one at 64px
    (images / "notes.txt").write_text("not an image")
    capsys.readouterr()
    assert main(["predict", "--trial", str(number), "--images", str(images), "--out", "pred.csv"]) == 0
    assert f"skipped 1 file that is not an image (.txt), e.g. {images / 'notes.txt'}" in capsys.readouterr().out
    rows = list(csv.reader(open(here / "pred.csv")))
    assert rows[0] == ["ID", "Label", "Confidence"] and sorted(r[0] for r in rows[1:]) == [f"img{i}" for i in range(6)]
    model, saved = load_model(here / "studies" / STUDY / f"trial-{number}" / "model.pt", torch.device("cpu"))
    from nas.train import predict

    probs = predict(model, data.test_x[:5], saved["mean"], saved["std"])
    got = {r[0]: r[1:] for r in rows[1:]}
    assert [got[f"img{i}"][0] for i in range(5)] == [saved["classes"][c] for c in probs.argmax(1).tolist()]
    assert [float(got[f"img{i}"][1]) for i in range(5)] == pytest.approx(probs.max(1).values.tolist(), abs=1e-4)


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
    imp, _ = importances(study)  # trials in the older layout: dicts in user attrs
    assert max(imp, key=imp.get) == "depth (blocks)"
    assert importance_figure(study, imp).data[0].orientation == "h"
    few = optuna.create_study(direction="maximize")
    assert importances(few) == (None, "0 complete trials, 8 needed")


# ------------------------------------------------------------------ the leaderboard on a made-up study


def made_up_study(budget=5000):
    """Two complete trials, a pruned one whose epoch-1 score beats both, and a preset far over the
    budget, in the layout nas search writes (dicts in system attrs, short strings in user attrs)."""
    from optuna.trial import TrialState, create_trial

    from nas.arch import ArchSpec
    from nas.count import count_macs, count_params
    from nas.recipe import Recipe
    from nas.study import ARCH_KEY, RECIPE_KEY

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("budget", budget)
    study.set_user_attr("proxy_epochs", 5)
    for width, value, state in ((8, 0.5, TrialState.COMPLETE), (16, 0.6, TrialState.COMPLETE), (12, None, TrialState.PRUNED)):
        spec = ArchSpec(blocks=[1], channels=[width])
        attrs = {"params": count_params(spec), "macs": count_macs(spec), "arch": spec.describe(),
                 "recipe": Recipe().describe(), "counted": True, "proxy_seconds": 12.5}  # fmt: skip
        if state == TrialState.PRUNED:
            attrs["reason"] = "pruned"
        steps = {1: 0.9} if state == TrialState.PRUNED else {1: value / 2, 5: value}
        study.add_trial(create_trial(state=state, value=value, user_attrs=attrs, intermediate_values=steps,
                                     system_attrs={ARCH_KEY: spec.to_dict(), RECIPE_KEY: Recipe().to_dict()}))  # fmt: skip
    big = ArchSpec(blocks=[2, 2, 2, 2], channels=[64, 128, 256, 512])
    study.set_user_attr("retrain:preset-resnet18", {  # the older layout: the dict in the user attr
        "retrain_test_acc": 0.95, "retrain_test_acc_tta": 0.955, "retrain_epochs": 200, "params": count_params(big),
        "macs": count_macs(big), "spec": big.to_dict(), "recipe": Recipe().to_dict()})  # fmt: skip
    return study


def test_the_leaderboard_ranks_pruned_scores_below_complete_ones_and_flags_an_over_budget_preset():
    from nas.report import leaderboard

    df = leaderboard(made_up_study())
    assert list(df["state"]) == ["over budget", "complete", "complete", "pruned"]
    assert list(df["proxy"][1:]) == [0.6, 0.5, 0.9] and list(df["proxy_epochs"][1:]) == [5, 5, 1]


def test_the_pareto_front_holds_complete_trials_only_on_a_log_axis():
    from nas.report import accuracy_vs, leaderboard

    study = made_up_study()
    fig = accuracy_vs(study, leaderboard(study))
    traces = {t.name: t for t in fig.data}
    pruned_params = leaderboard(study).query("state == 'pruned'")["params"].iloc[0]
    assert pruned_params not in list(traces["Pareto front"].x)
    assert list(traces["pruned (score when stopped)"].x) == [pruned_params]
    assert fig.layout.xaxis.type == "log"  # the preset at 11M does not squash the rest
    preset = traces["preset test acc, 200 epochs"]  # a diamond, apart from the retrained trials' stars
    assert "preset-resnet18 (over budget)" in preset.text and preset.marker.symbol == "diamond"
    ticks = fig.layout.xaxis.ticktext  # 1-2-5 steps that stay apart at half a page's width, not 1-9 per decade
    assert len(ticks) <= 7 and all(t[0] in "125" for t in ticks), ticks


def test_log_ticks_stay_apart():
    from nas.report import log_ticks

    assert log_ticks(1000, 20000)["ticktext"] == ["1k", "2k", "5k", "10k", "20k"]
    assert log_ticks(60_000, 90_000)["ticktext"] == ["60k", "70k", "80k", "90k"]  # narrower than one 1-2-5 step
    assert log_ticks(1e3, 1e8)["ticktext"] == ["1k", "10k", "100k", "1M", "10M", "100M"]


def test_under_a_mac_limit_the_figures_show_macs_and_a_preset_over_it_is_flagged():
    from nas.report import accuracy_vs, budget_check, leaderboard

    study = made_up_study(budget=10**8)  # the preset is under this budget, far over the MAC limit
    study.set_user_attr("max_macs", 1_000_000)
    df = leaderboard(study)
    assert df.loc[df["name"] == "preset-resnet18", "state"].item() == "over budget"
    fig = accuracy_vs(study, df, "macs")
    traces = {t.name: t for t in fig.data}
    assert list(traces["MAC limit 1,000,000"].x) == [1_000_000, 1_000_000]
    lo, hi = fig.layout.xaxis.range  # the limit inside the frame, not on it
    assert lo < math.log10(df["macs"].min()) and math.log10(max(df["macs"].max(), 1_000_000)) < hi
    assert sorted(traces["proxy_val_acc (complete)"].x) == sorted(df.query("state == 'complete'")["macs"])
    assert "MACs" in fig.layout.xaxis.title.text
    check = {t.name: t for t in budget_check(study, "macs").data}
    assert sorted(check["trained (2)"].y) == sorted(df.query("state == 'complete'")["macs"])
    assert "MAC limit 1,000,000" in check and "10%" not in str(check)


@pytest.mark.parametrize("width", [80, 120])
def test_the_printed_leaderboard_fits_the_terminal(width):
    from nas.report import console_table, leaderboard

    table = console_table(leaderboard(made_up_study()), width).splitlines()
    assert all(len(line) <= width for line in table)
    assert table[0].split()[:4] == ["name", "state", "proxy", "ep"] and "params" in table[0]
    assert "11.17M" in table[1] and "pruned" in table[-1] and re.search(r" \d+\.\dk ", table[-1])  # not 3138
    assert ("MACs" in table[0]) == (width >= 120)  # dropped first where room is short

def test_a_study_in_the_earlier_layout_still_reports_and_retrains(here, capsys):
    """Studies written before the machine data moved to system attrs keep the space text and the
    arch/recipe dicts in user attrs, and the training time as gpu_seconds."""
    from optuna.trial import create_trial

    from nas.study import study_space, trial_recipe, trial_seconds

    new = load_study(None, STUDY)
    old = optuna.create_study(study_name="old-layout", storage=new._storage, direction="maximize")
    for key, value in new.user_attrs.items():
        if not key.startswith("retrain:"):
            old.set_user_attr(key, value)
    old.set_user_attr("space", study_space(new))
    for t in new.trials:
        attrs = {k: v for k, v in t.user_attrs.items() if k not in ("proxy_seconds", "worker")}
        attrs.update(arch=trial_arch(t), recipe=trial_recipe(t), gpu_seconds=trial_seconds(t))
        old.add_trial(create_trial(state=t.state, value=t.value, params=t.params, distributions=t.distributions,
                                   user_attrs=attrs, intermediate_values=t.intermediate_values))  # fmt: skip
    number = complete_trials()[0]
    target = rt.trial_target(old, number, load_dataset("synthetic:200").shape)
    assert target.spec.to_dict() == trial_arch(new.trials[number])
    assert main(["report", "--study", "old-layout", "--storage", f"sqlite:///studies/{STUDY}.db", "--out", "old"]) == 0
    rows = list(csv.DictReader(open(here / "old" / "leaderboard.csv")))
    assert len(rows) == 4 and all(r["arch"].startswith(("basic", "preact")) and float(r["proxy_seconds"]) > 0 for r in rows)


def test_the_report_sets_the_search_best_against_the_scaled_hand_design_at_their_seed_means():
    from nas.arch import ArchSpec
    from nas.count import count_macs, count_params
    from nas.recipe import Recipe
    from nas.report import against_control, leaderboard

    study = made_up_study()
    assert against_control(leaderboard(study)) is None  # no trial retrained: nothing to set against anything

    def stored(name, acc, spec, seed=0):
        study.set_user_attr(f"retrain:{name}", {
            "retrain_test_acc": acc, "retrain_test_acc_tta": acc, "retrain_epochs": 30, "params": count_params(spec),
            "macs": count_macs(spec), "spec": spec.to_dict(), "recipe": Recipe(seed=seed).to_dict(), "seed": seed})  # fmt: skip

    small = ArchSpec(blocks=[1], channels=[16])
    stored("trial-1", 0.80, small)
    assert "--fit-budget --study S" in against_control(leaderboard(study), " --study S")
    stored("preset-resnet8-fit", 0.78, small)
    said = against_control(leaderboard(study))
    assert said.startswith("The search's best beats the best hand design scaled to the budget by 2.00 points")
    assert "trial-1 0.8000 (1 seed" in said and "one seed" in said
    stored("trial-1-seed1", 0.74, small, seed=1)  # its mean, 0.77, is below the hand design's
    stored("preset-resnet8-fit-seed1", 0.78, small, seed=1)
    df = leaderboard(study)
    seed_row = df[df["name"] == "trial-1-seed1"].iloc[0]
    assert seed_row["state"] == "seed" and seed_row["trial"] == 1 and math.isnan(seed_row["proxy"])
    said = against_control(df)
    assert said.startswith("A hand design scaled to the budget matches or beats the search")
    assert "trial-1 0.7700 (2 seeds" in said and "preset-resnet8-fit 0.7800 (2 seeds" in said and "one seed" not in said
