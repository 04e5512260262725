"""Finding, listing and reading studies: nothing is guessed, nothing is created, every hint names its study."""

import io

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.arch import ArchSpec
from nas.cli import main
from nas.progress import Progress
from nas.recipe import Recipe
from nas.search import SearchConfig
from nas.study import RETRAIN_PREFIX, open_storage, set_study_system_attr

SPEC = ArchSpec(blocks=[1], channels=[8]).to_dict()
RECIPE = Recipe().to_dict()


def add(study, value=None, state=TrialState.COMPLETE, **attrs):
    base = {"params": 1000, "macs": 5000}
    if state == TrialState.COMPLETE or attrs.get("reason") in ("interrupted", "stale", "error"):
        base.update(counted=True)
    study.add_trial(create_trial(state=state, value=value, user_attrs={**base, **attrs},
                                 system_attrs={"nas:arch": SPEC, "nas:recipe": RECIPE},
                                 intermediate_values={1: value} if value is not None else {}))  # fmt: skip


@pytest.fixture
def two(tmp_path, monkeypatch):
    """studies/a.db (two trained trials, one rejected proposal) and studies/b.journal (one trained trial)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    a = optuna.create_study(study_name="a", storage=open_storage("sqlite:///studies/a.db"), direction="maximize")
    a.set_user_attr("budget", 5000)
    add(a, reason="over_budget", state=TrialState.PRUNED, params=9000)
    add(a, 0.5)
    add(a, 0.6)
    b = optuna.create_study(study_name="b", storage=open_storage("journal:studies/b.journal"), direction="maximize")
    b.set_user_attr("budget", 5000)
    add(b, 0.7)
    return a, b


def test_several_studies_and_none_named_are_listed_not_guessed(two, capsys):
    assert main(["trials"]) == 2
    err = capsys.readouterr().err
    assert "studies/ holds 2 studies (a, b); name one with --study NAME (nas studies lists them)" in err
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "--study a\n" in out and "--study b --storage journal:studies/b.journal" in out
    assert main(["trials", "--study", "b"]) == 0  # found in its journal without --storage
    assert "study b in journal:studies/b.journal" in capsys.readouterr().out


def test_a_report_hint_names_the_study_and_storage_it_came_from(two, capsys):
    assert main(["report", "--study", "b"]) == 0
    out = capsys.readouterr().out
    assert "retrain the best:\n  nas retrain --top 3 --study b --storage journal:studies/b.journal\n" in out
    assert "optuna-dashboard studies/b.journal --artifact-dir studies/b/artifacts" in out


@pytest.mark.parametrize("storage", ["journal:nosuch.journal", "sqlite:///nosuch.db", "nosuch.journal"])
def test_a_storage_file_that_does_not_exist_is_said_and_not_created(tmp_path, monkeypatch, capsys, storage):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--storage", storage]) == 2
    assert "no such file nosuch." in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_predict_on_a_rejected_proposal_does_not_suggest_retraining_it(two, capsys):
    assert main(["predict", "--trial", "0", "--study", "a", "--images", "."]) == 2
    err = capsys.readouterr().err
    assert "trial 0 was never trained (over_budget), so it has no model; nas trials --study a lists" in err
    assert "nas retrain" not in err


def test_the_search_summary_counts_cut_short_trials_and_does_not_retrain_what_was(two):
    a, _ = two
    add(a, state=TrialState.FAIL, reason="interrupted")
    set_study_system_attr(a, f"nas:{RETRAIN_PREFIX}trial-2", {"retrain_test_acc": 0.9})
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.start(a, SearchConfig(budget=5000, trials=2, space="tiny", storage="sqlite:///studies/a.db", seed=7))
    progress.summary(a)
    text = out.getvalue()
    assert "tpe sampler, median pruner, seed 7" in text
    assert "2 trials trained (0 pruned, 0 failed); 1 cut short (1 interrupted), its slot freed for another;" in text
    assert "retrain the best not yet retrained (#2 is) in full: nas retrain --trial 1 --study a\n" in text


def test_the_leaderboard_lists_a_cut_short_trial_last_with_its_reason(two):
    from nas.report import console_table, leaderboard

    a, _ = two
    add(a, state=TrialState.FAIL, reason="interrupted")
    df = leaderboard(a)
    assert list(df["name"]) == ["trial-2", "trial-1", "trial-3"] and df["reason"].iloc[-1] == "interrupted"
    assert console_table(df, 80).splitlines()[-1].split()[:2] == ["trial-3", "interrupted"]


def test_a_report_honours_columns(two, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["report", "--study", "a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 60 for line in lines), lines
    assert lines[1].split()[:2] == ["name", "state"] and "test" not in lines[1]  # no retrain yet: no empty columns
