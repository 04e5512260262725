"""What optuna-dashboard 0.21 shows of a nas study, read through the dashboard's own web API (the
JSON its pages are drawn from) on a real search: a rejected proposal and a pruned training are
both Pruned there, so everything else has to tell them apart."""

import contextlib
import io
import json
import os

import optuna
import pytest

from nas.cli import main
from nas.study import counts, load_study, study_space, trial_arch

STUDY = "tiny-synthetic-12k"


def dashboard(root, artifacts: bool = True):
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    store = FileSystemArtifactStore(str(root / "studies" / STUDY / "artifacts")) if artifacts else None
    return wsgi(f"sqlite:///{root / 'studies' / STUDY}.db", artifact_store=store)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A search at a budget the tiny space often exceeds, with a pruner that stops every training
    after its first epoch: rejected proposals and pruned trainings side by side."""

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    root = tmp_path_factory.mktemp("dash")
    cwd = os.getcwd()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("nas.search.make_pruner", lambda name, epochs: AlwaysPrune())
        os.chdir(root)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["search", "--space", "tiny", "--dataset", "synthetic:200", "--proxy-epochs", "2",
                             "--gpus", "cpu", "--seed", "0", "--budget", "12k", "--trials", "2"]) == 0  # fmt: skip
        finally:
            os.chdir(cwd)
    return root, out.getvalue()


def detail(root, get) -> dict:
    code, body = get(dashboard(root), "/api/studies/1")
    assert code == 200
    return json.loads(body)


def test_rejected_and_pruned_trials_say_what_they_are(searched, http_get):
    root, _ = searched
    d = detail(root, http_get)
    assert d["objective_names"] == ["proxy_val_acc"]  # not "Objective 0"
    by_reason: dict[str, list[dict]] = {}
    for t in d["trials"]:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        by_reason.setdefault(attrs.get("reason"), []).append(t)
    rejected, pruned = by_reason.get("over_budget", []), by_reason.get("pruned", [])
    assert rejected and len(pruned) == 2, "12k should reject some tiny nets; the pruner stops both trainings"
    for t in rejected + pruned:
        assert t["state"] == "Pruned"  # what the list and the timeline show: the same for both...
    for t in rejected:  # ...so the trial's note says which, and there is no curve
        assert t["note"]["body"].startswith("**Rejected before training**") and "of the budget of 12,000" in t["note"]["body"]
        assert t["intermediate_values"] == [] and "values" not in t
    for t in pruned:
        assert t["note"]["body"].startswith("**Pruned** by the") and t["intermediate_values"]


def test_user_attrs_are_short_and_the_space_reads_as_yaml(searched, http_get):
    root, _ = searched
    d = detail(root, http_get)
    longest = max(len(a["value"]) for t in d["trials"] for a in t["user_attrs"])
    assert longest <= 100  # a table row stays one or two lines high
    study_attrs = {a["key"]: a["value"] for a in d["user_attrs"]}
    assert "space" not in study_attrs and all(len(v) <= 200 for v in study_attrs.values())
    assert "```yaml\ndescription: >" in d["note"]["body"] and "\n  stages: {int: [1, 3]}" in d["note"]["body"]
    # the machine keeps what it rebuilds trials from, out of the dashboard's sight
    study = load_study(f"sqlite:///{root / 'studies' / STUDY}.db", STUDY)
    assert study_space(study).startswith("description:")
    assert all(trial_arch(t)["blocks"] for t in study.trials if counts(t))


def test_the_study_page_shows_the_budget_check(searched, http_get):
    root, _ = searched
    figures = {g["id"]: json.loads(g["graph_object"]) for g in detail(root, http_get)["plotly_graph_objects"]}
    assert set(figures) == {"nas-budget-check", "nas-accuracy"}
    names = [trace["name"] for trace in figures["nas-budget-check"]["data"]]
    assert "budget 12,000" in names
    assert any(n.startswith("rejected: over budget") for n in names) and any(n.startswith("pruned") for n in names)


def test_the_printed_dashboard_command_shows_the_artifacts(searched, http_get):
    root, out = searched
    get = http_get
    assert f"optuna-dashboard sqlite:///studies/{STUDY}.db --artifact-dir studies/{STUDY}/artifacts" in out
    # started that way, the dashboard serves artifacts; without the flag it answers 400
    assert get(dashboard(root, artifacts=False), "/artifacts/1/0000")[0] == 400
    assert get(dashboard(root), "/artifacts/1/0000")[0] == 404  # served, just no such artifact
