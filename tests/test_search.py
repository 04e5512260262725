import os
import re
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

import nas.train
from nas.arch import ArchSpec
from nas.cli import main
from nas.errors import NasError
from nas.count import count_params
from nas.liveness import WORKER_KEY
from nas.search import claim_slot
from nas.study import counts, load_study, open_storage, study_space, trial_arch

FAST = ["--space", "tiny", "--dataset", "synthetic:200", "--proxy-epochs", "2", "--gpus", "cpu", "--seed", "0"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def search(capsys, *args):
    code = main(["search", *FAST, *args])
    out, err = capsys.readouterr()
    return code, out, err


def study_of(name="tiny-synthetic-5M"):
    return load_study(None, name)


def test_end_to_end_search_stores_everything(here, capsys):
    code, out, _ = search(capsys, "--trials", "4")
    assert code == 0 and "retrain the best in full: nas retrain --trial" in out
    assert "optuna-dashboard sqlite:///studies/tiny-synthetic-5M.db" in out
    study = study_of()
    trained = [t for t in study.trials if counts(t)]
    assert len(trained) == 4 and not [t for t in study.trials if t.state == TrialState.RUNNING]
    attrs = study.user_attrs
    assert attrs["budget"] == 5_000_000 and "stages" in study_space(study) and attrs["dataset"] == "synthetic:200"
    assert study.metric_names == ["proxy_val_acc"]
    assert attrs["split"]["val_size"] == 20 and {"nas", "torch", "optuna"} <= set(attrs["versions"])
    for t in trained:
        a = t.user_attrs
        assert {"params", "macs", "arch", "recipe", "proxy_seconds", "device", "epoch_seconds", "worker"} <= set(a)
        spec = ArchSpec.from_dict(trial_arch(t))  # the machine's copy; the user attr is for people
        assert a["params"] == count_params(spec) and a["arch"] == spec.describe()
        assert t.constraints["budget"] <= 0 and 1 in t.intermediate_values
        assert t.state == TrialState.COMPLETE or a["reason"] in ("pruned", "nan", "oom", "error")
        assert len(a["train_loss"]) == len(t.intermediate_values) and all(x > 0 for x in a["train_loss"])


def test_rerunning_resumes_and_adds_trials(here, capsys):
    search(capsys, "--trials", "2")
    first = {t.number: t.value for t in study_of().trials}
    code, out, _ = search(capsys, "--trials", "4")
    assert code == 0 and "resuming: 2 of 4 trials already trained" in out
    study = study_of()
    assert sum(counts(t) for t in study.trials) == 4
    assert all(study.trials[n].value == v for n, v in first.items())  # kept as they were
    code, out, _ = search(capsys, "--trials", "4")  # nothing left to do
    assert code == 0 and sum(counts(t) for t in study_of().trials) == 4


def test_a_resumed_seeded_run_does_not_replay_the_first_runs_proposals(here, capsys):
    search(capsys, "--trials", "2", "--sampler", "random")
    first = [t.params for t in study_of().trials]
    search(capsys, "--trials", "4", "--sampler", "random")
    again = [t.params for t in study_of().trials[len(first):]]
    assert len(again) == 2 and not any(p in first for p in again)  # lr is continuous: a replay repeats it exactly


def test_sampler_seeds_differ_by_run_and_worker_and_are_reproducible():
    from nas.search import sampler_seed

    seeds = {sampler_seed(0, n, w) for n in (0, 5) for w in (0, 1)} | {sampler_seed(1, 0, 0)}
    assert len(seeds) == 5 and sampler_seed(0, 5, 1) == sampler_seed(0, 5, 1)


def test_pruners_stop_nothing_before_60_percent_of_the_proxy():
    from nas.search import SearchConfig
    from nas.study import first_rung, make_pruner

    assert [first_rung(e) for e in (1, 2, 3, 5, 10)] == [1, 2, 2, 3, 6]
    assert make_pruner("hyperband", 5)._min_resource == 3 and make_pruner("median", 5)._n_warmup_steps == 3
    assert SearchConfig.pruner == "median"


def test_over_budget_proposals_never_reach_build_model(here, capsys, monkeypatch):
    built = []
    real = nas.train.build_model
    monkeypatch.setattr(nas.train, "build_model", lambda spec: built.append(spec) or real(spec))
    code, _, _ = search(capsys, "--trials", "3", "--budget", "12k")
    assert code == 0
    study = study_of("tiny-synthetic-12k")
    over = [t for t in study.trials if t.user_attrs.get("reason") == "over_budget"]
    assert over, "the tiny space at 12k should propose some nets over budget"
    for t in over:
        assert t.state == TrialState.PRUNED and t.user_attrs["params"] > 12_000 and t.constraints["budget"] > 0
        assert not counts(t) and not t.intermediate_values
    assert len(built) == 3 and all(count_params(s) <= 12_000 for s in built)


def test_a_mac_limit_rejects_with_its_own_reason_and_constraint(here, capsys, monkeypatch):
    from nas.count import count_macs

    built = []
    real = nas.train.build_model
    monkeypatch.setattr(nas.train, "build_model", lambda spec: built.append(spec) or real(spec))
    code, out, _ = search(capsys, "--trials", "3", "--max-macs", "2M")
    assert code == 0 and "tiny-synthetic-5M-2Mmacs" in out
    study = study_of("tiny-synthetic-5M-2Mmacs")
    assert study.user_attrs["max_macs"] == 2_000_000
    over = [t for t in study.trials if t.user_attrs.get("reason") == "over_macs"]
    assert over, "the tiny space under 2M MACs should propose some nets over the limit"
    for t in over:  # within the parameter budget, over the MAC limit: its own constraint says so
        assert t.state == TrialState.PRUNED and not counts(t) and not t.intermediate_values
        assert t.user_attrs["macs"] > 2_000_000 and t.constraints["macs"] > 0 and t.constraints["budget"] <= 0
    assert len(built) == 3 and all(count_macs(s) <= 2_000_000 for s in built)
    assert all(t.constraints["macs"] <= 0 for t in study.trials if counts(t))
    code, _, err = search(capsys, "--trials", "3", "--max-macs", "3M", "--study", "tiny-synthetic-5M-2Mmacs")
    assert code == 2 and "max_macs" in err  # another limit, another study: scores would not compare


def test_impossible_mac_limit_stops_at_once(here, capsys):
    code, _, err = search(capsys, "--max-macs", "1000")
    assert code == 2 and "fits a limit of 1,000 MACs per image" in err and "smallest" in err


def test_impossible_budget_stops_at_once(here, capsys):
    start = time.monotonic()
    code, _, err = search(capsys, "--budget", "500")
    assert code == 2 and "fits a budget of 500" in err and "smallest" in err
    assert time.monotonic() - start < 10 and err.count("\n") == 1


def test_fill_budget_uses_most_of_the_budget(here, capsys):
    code, out, _ = search(capsys, "--trials", "3", "--budget", "60k", "--fill-budget", "--record", "results.md")
    assert code == 0
    trials = study_of("tiny-synthetic-60k").trials
    trained = [t for t in trials if counts(t)]
    underfilled = [t for t in trials if t.user_attrs.get("reason") == "underfilled"]
    for t in underfilled:  # no width multiple of 8 reaches 90%: refused
        assert t.state == TrialState.PRUNED and t.constraints["budget"] > 0 and not counts(t)
    assert len(trained) == 3 and all(0.9 <= t.user_attrs["params"] / 60_000 <= 1.0 for t in trained)
    if underfilled:  # said as what it is: under the budget, not over it
        assert "under 90% of the budget" in out
    record = (here / "results.md").read_text()
    assert "| passed the budget check |" in record and "too few for a share after the first 50" in record
    best = next(line for line in record.splitlines() if line.startswith("| best trial |"))
    assert best.count(" | ") == 1 and "\\|" in best  # the arch | recipe bar escaped: one table row, two cells


def test_pruned_trials_count_and_keep_their_curve(here, capsys, monkeypatch):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    monkeypatch.setattr("nas.search.make_pruner", lambda name, epochs: AlwaysPrune())
    code, out, _ = search(capsys, "--trials", "2")
    trained = [t for t in study_of().trials if counts(t)]
    assert code == 0 and len(trained) == 2 and "pruned after epoch 1" in out
    for t in trained:
        assert t.state == TrialState.PRUNED and t.user_attrs["reason"] == "pruned"
        assert list(t.intermediate_values) == [1] and len(t.user_attrs["epoch_seconds"]) == 1
        assert len(t.user_attrs["train_loss"]) == 1  # its training speed so far, as nas.score.tse reads it


def test_a_changed_budget_is_refused_on_an_existing_study(here, capsys):
    search(capsys, "--trials", "1", "--study", "s")
    code, _, err = search(capsys, "--trials", "2", "--study", "s", "--budget", "4M")
    assert code == 2 and "was made with budget 5,000,000, not 4,000,000" in err


def test_the_score_is_the_objective_and_the_pruners_signal_and_part_of_the_study(here, capsys):
    from nas.score import tse

    code, _, _ = search(capsys, "--trials", "2", "--study", "t", "--score", "tse", "--pruner", "none")
    study = study_of("t")
    assert code == 0 and study.metric_names == ["proxy_tse"] and study.user_attrs["score"] == "tse"
    for t in (t for t in study.trials if counts(t)):
        losses = t.user_attrs["train_loss"]
        rows = [{"train_loss": x} for x in losses]
        assert t.value == pytest.approx(tse(rows), abs=1e-4)  # minus the summed epoch losses
        assert [t.intermediate_values[k] for k in sorted(t.intermediate_values)] == pytest.approx(
            [tse(rows[:k]) for k in range(1, len(rows) + 1)], abs=1e-4)  # the running sum, epoch by epoch
    code, _, err = search(capsys, "--trials", "3", "--study", "t")  # the default score would not compare
    assert code == 2 and "was made with score 'tse', not 'val_acc'" in err


def test_a_study_searched_with_another_score_is_shown_by_that_scores_name(here, capsys):
    """Not as a validation accuracy: the progress lines, `nas trials`, the retrain's record, the
    report's files, legend and note all name the objective the study was searched with."""
    import csv

    from nas.report import note

    code, out, _ = search(capsys, "--trials", "2", "--study", "t", "--score", "tse", "--pruner", "none")
    best = max((t for t in study_of("t").trials if t.value is not None), key=lambda t: t.value)
    assert code == 0 and f"#{best.number:<4} tse {best.value:.4f}" in out and " val " not in out
    assert "top 2 by proxy_tse" in out
    assert main(["trials", "--study", "t"]) == 0 and "score: proxy_tse" in capsys.readouterr().out
    assert main(["retrain", "--study", "t", "--trial", str(best.number), "--epochs", "1"]) == 0
    assert main(["report", "--study", "t", "--out", "rep"]) == 0
    out = capsys.readouterr().out
    assert "proxy: proxy_tse, training speed" in " ".join(out.split())
    row = next(csv.DictReader(open(here / "rep" / "leaderboard.csv")))
    assert "proxy_tse" in row and "proxy_val_acc" not in row and float(row["proxy_tse"]) == pytest.approx(best.value)
    study = study_of("t")
    assert "### Best trials (proxy_tse)" in note(study) and "| name | test acc | flip-TTA | epochs | params | proxy_tse |" in note(study)
    from nas.report import accuracy_vs, leaderboard
    from nas.retrain import retrains

    assert retrains(study)[f"trial-{best.number}"]["proxy_tse"] == best.value
    fig = accuracy_vs(study, leaderboard(study))  # minus a loss sum, not an accuracy: an axis of its own
    assert {tr.yaxis for tr in fig.data if tr.name.startswith("proxy_tse")} == {"y2"} and fig.layout.yaxis2.title.text == "proxy_tse"


def test_a_study_made_before_the_score_was_recorded_resumes_with_val_acc(here, capsys, monkeypatch):
    import nas.search

    prepare = nas.search.prepare

    def without_score(cfg):  # the identity nas wrote before the key existed
        space, split, identity = prepare(cfg)
        return space, split, {k: v for k, v in identity.items() if k != "score"}

    with monkeypatch.context() as m:
        m.setattr(nas.search, "prepare", without_score)
        search(capsys, "--trials", "1", "--study", "old")
    assert "score" not in study_of("old").user_attrs
    assert search(capsys, "--trials", "2", "--study", "old")[0] == 0
    code, _, err = search(capsys, "--trials", "3", "--study", "old", "--score", "tse")
    assert code == 2 and "was made with score 'val_acc', not 'tse'" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--storage", "foo://bar"], "cannot open storage foo://bar"),
        (["--storage", "postgresql+psycopg2://me:secret@localhost/nas"], "driver module 'psycopg2' is not installed"),
        (["--storage", "postgresql://me:secret@localhost:1/nas"], "postgresql://me:***@localhost:1/nas"),
        (["--storage", "not-a-url"], "neither a database URL"),
        (["--storage", "sqlite:////no/such/dir/x.db"], "does not exist"),
        (["--dataset", "nope"], "unknown dataset"),
        (["--space", "nope"], "no such file"),
        (["--trials", "0"], "--trials"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_2(here, capsys, args, message, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # not installed, wherever the tests run
    code = main(["search", *FAST, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "secret" not in err


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_other_samplers_search(here, capsys, sampler):
    code, out, _ = search(capsys, "--trials", "2", "--sampler", sampler, "--study", sampler)
    assert code == 0 and sum(counts(t) for t in study_of(sampler).trials) == 2


def test_gp_sampler_without_scipy_says_what_to_install(here, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    code, _, err = search(capsys, "--trials", "1", "--sampler", "gp")
    assert code == 2 and "pip install -e '.[gp]'" in err


def test_timeout_stops_starting_trials(here, capsys):
    code, out, _ = search(capsys, "--trials", "50", "--timeout", "0.5s")
    trained = sum(counts(t) for t in study_of().trials)
    assert code == 0 and 1 <= trained < 50 and "trials trained" in out


def test_bad_space_file_names_file_and_key(here, capsys):
    (here / "bad.yaml").write_text("arch:\n  stages: 2\n  blocks: 1\n  width: {int: [32, 8]}\n")
    code = main(["search", *FAST, "--space", "bad.yaml"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.yaml: arch.width: Optuna refuses this distribution: `low <= high` must hold" in err


TWO_NETS = "arch:\n  stages: 1\n  blocks: 1\n  channels: {choice: [8, 16]}\n"


def test_a_repeated_proposal_takes_its_twins_score_and_trains_nothing(here, capsys, monkeypatch):
    (here / "two.yaml").write_text(TWO_NETS)
    trainings = []
    real_fit = nas.train.fit
    monkeypatch.setattr(nas.train, "fit", lambda spec, *a, **k: trainings.append(spec.channels) or real_fit(spec, *a, **k))
    code, out, _ = search(capsys, "--space", "two.yaml", "--sampler", "random", "--pruner", "none", "--trials", "2")
    trials = study_of("two-synthetic-5M").trials
    trained = [t for t in trials if counts(t)]
    repeats = [t for t in trials if t.user_attrs.get("reason") == "repeat"]
    assert code == 0 and sorted(trainings) == [(8,), (16,)] and len(trained) == 2  # each net trained once
    assert repeats and f"{len(repeats)} repeat" in out
    for t in repeats:
        twin = trials[t.user_attrs["repeat_of"]]
        assert t.state == TrialState.COMPLETE and t.value == twin.value and not t.intermediate_values
        assert trial_arch(t) == trial_arch(twin) and twin in trained


def test_a_space_with_nothing_new_to_train_stops_and_says_so(here, capsys, monkeypatch):
    monkeypatch.setattr("nas.search.MAX_REJECTED_IN_A_ROW", 5)
    (here / "two.yaml").write_text(TWO_NETS)
    search(capsys, "--space", "two.yaml", "--sampler", "random", "--pruner", "none", "--trials", "2")
    code, _, err = search(capsys, "--space", "two.yaml", "--sampler", "random", "--pruner", "none", "--trials", "3")
    assert code == 2 and "none was new" in err and "widen it or ask for fewer trials" in err
    assert sum(counts(t) for t in study_of("two-synthetic-5M").trials) == 2  # what was stored is intact


# ------------------------------------------------------------------------------ the slot protocol


def _trial(study, attrs=None, state=None):
    trial = study.ask()
    for k, v in (attrs or {}).items():
        trial.set_user_attr(k, v)
    if state:
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return trial


def test_workers_racing_to_create_a_new_database_all_open_it(tmp_path):
    """Optuna's schema setup is not atomic: processes opening a new database together collide on it."""
    code = "import sys; from nas.study import open_storage; open_storage(sys.argv[1])"
    for round_ in range(3):
        url = f"sqlite:///{tmp_path}/race{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors


def test_claim_counts_held_and_undeciced_lower_trials():
    study = optuna.create_study(direction="maximize")
    _trial(study, {"counted": True}, TrialState.COMPLETE)  # holds a slot
    _trial(study, {"reason": "over_budget"}, TrialState.PRUNED)  # never held one
    _trial(study, {"counted": True, "reason": "interrupted"}, TrialState.FAIL)  # gave its slot back
    me = _trial(study)
    assert claim_slot(study, me, 2) and me.user_attrs["counted"]
    late = _trial(study)
    assert not claim_slot(study, late, 2)  # trial 0 and me hold both slots


def test_claim_waits_for_a_deciding_lower_trial():
    study = optuna.create_study(direction="maximize")
    _trial(study, {"counted": True}, TrialState.COMPLETE)
    deciding = _trial(study)  # RUNNING, not yet decided
    me = _trial(study)

    def decide():
        time.sleep(0.3)
        deciding.set_user_attr("reason", "over_budget")
        study.tell(deciding, state=TrialState.PRUNED)

    threading.Thread(target=decide).start()
    start = time.monotonic()
    assert claim_slot(study, me, 2)  # the lower trial turned out over budget: the slot is mine
    assert time.monotonic() - start >= 0.25


# --------------------------------------------------------------------------- processes and signals


def spawn(here, *args):
    # SIGINT back to its default: a shell's background job (`pytest &`, nohup) starts with it
    # ignored, the child inherits that and would not see the test's Ctrl-C at all.
    return subprocess.Popen([sys.executable, "-m", "nas", "search", *args], cwd=here,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


# One net whose trials last ~3 s on two cores: long enough to signal mid-training. The learning
# rate varies only so that no proposal repeats a trained one (a repeat is not trained).
STEADY_SPACE = ("arch:\n  stages: 1\n  blocks: 1\n  channels: 16\n"
                "recipe:\n  batch_size: 64\n  epochs: 12\n  lr: {float: [0.01, 0.1]}\n")  # fmt: skip


def steady_args(here, study):
    (here / "steady.yaml").write_text(STEADY_SPACE)
    return [*FAST, "--space", "steady.yaml", "--dataset", "synthetic", "--proxy-epochs", "12", "--trials", "1",
            "--pruner", "none", "--study", study]  # fmt: skip


def wait_for_running(proc, db, study_name, timeout=60):
    """Until the worker writing `db` has a trial in training with an epoch behind it (and ~11 ahead)."""
    deadline, storage = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if proc.poll() is not None:
                raise AssertionError(f"the worker exited early: {proc.communicate()}")
            if not db.exists():  # asking sooner would create the file under the worker's feet
                continue
            try:
                storage = storage or open_storage(f"sqlite:///{db}")  # one engine: no leaked locks
                study = optuna.load_study(study_name=study_name, storage=storage)
            except KeyError:  # the worker has not created the study yet
                continue
            if any(t.state == TrialState.RUNNING and counts(t) and t.intermediate_values for t in study.trials):
                return
        raise AssertionError("no trial started training")
    finally:
        if storage:
            storage.engine.dispose()


def test_two_workers_share_one_storage_without_losing_or_duplicating_trials(here):
    journal = f"journal:{here / 'shared.journal'}"
    args = [*FAST, "--dataset", "synthetic:400", "--trials", "6", "--storage", journal, "--study", "shared"]
    procs = [spawn(here, *args), spawn(here, *args)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(here / "shared.journal"))))  # fmt: skip
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))  # none lost, none twice
    held = [t for t in trials if counts(t)]
    assert len(held) == 6  # --trials holds for both workers together, exactly
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in held)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    pids = {t.system_attrs[WORKER_KEY]["pid"] for t in held}
    assert pids <= {p.pid for p in procs}


def test_ctrl_c_fails_the_running_trial_and_the_next_run_resumes(here):
    args = steady_args(here, "c")
    proc = spawn(here, *args)
    wait_for_running(proc, here / "studies" / "c.db", "c")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert "0 trials trained (0 pruned, 0 failed); 1 cut short (1 interrupted)" in out  # a summary, not a blank
    study = load_study(None, "c")
    assert [(t.state, t.user_attrs["reason"]) for t in study.trials] == [(TrialState.FAIL, "interrupted")]
    assert main(["search", *args]) == 0
    study = load_study(None, "c")
    assert sum(counts(t) for t in study.trials) == 1 and study.trials[-1].state != TrialState.RUNNING


def test_a_killed_worker_is_detected_and_its_trial_retried(here):
    args = steady_args(here, "k")
    proc = spawn(here, *args)
    wait_for_running(proc, here / "studies" / "k.db", "k")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = next(t for t in load_study(None, "k").trials if t.state == TrialState.RUNNING)
    assert main(["search", *args]) == 0
    trials = load_study(None, "k").trials
    assert trials[killed.number].state == TrialState.FAIL and trials[killed.number].user_attrs["reason"] == "stale"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == killed.number)
    assert retry.params == killed.params and counts(retry)
    assert sum(counts(t) for t in trials) == 1


# ------------------------------------------------------------------ workers among other workers


def _worker(trials=2, cls=None, **cfg):
    from nas.data import synthetic, validation_split
    from nas.search import SearchConfig, Worker
    from nas.space import load_space
    from nas.study import make_pruner, make_sampler

    config = SearchConfig(budget=5_000_000, trials=trials, space="tiny", proxy_epochs=1, **cfg)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0), pruner=make_pruner("none", 1))
    return (cls or Worker)(config, load_space("tiny"), study, validation_split(synthetic(100)), "cpu"), study


def test_a_worker_survives_another_worker_failing_its_trial():
    from nas.search import Worker

    class Stolen(Worker):
        def train(self, trial, spec, recipe):
            if trial.number == 0:  # another worker took this trial for stale and failed it
                self.study._storage.set_trial_user_attr(trial._trial_id, "reason", "stale")
                self.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            return super().train(trial, spec, recipe)

    worker, study = _worker(cls=Stolen)
    worker.run()  # no exception escapes
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["reason"] == "stale"
    assert sum(counts(t) for t in study.trials) == 2  # the stolen trial gave its slot back


def test_a_run_of_errors_stops_the_worker_without_using_the_slots():
    from nas.search import Worker

    class Broken(Worker):
        def train(self, trial, spec, recipe):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    worker, study = _worker(trials=10, cls=Broken)
    with pytest.raises(ValueError, match="3 trials in a row failed with an error .*illegal memory access"):
        worker.run()
    assert [t.user_attrs["reason"] for t in study.trials] == ["error"] * 3
    assert not any(counts(t) for t in study.trials)


def test_out_of_memory_of_both_kinds_is_recorded_as_oom_and_the_worker_goes_on(monkeypatch):
    import torch

    kinds = [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
             RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")]  # fmt: skip
    build = nas.train.build_model

    def too_big(spec):  # every model runs out of memory in its first forward pass
        model = build(spec)
        model.forward = lambda x: (_ for _ in ()).throw(kinds[len(released) % 2])
        return model

    released = []
    monkeypatch.setattr("nas.train.build_model", too_big)
    monkeypatch.setattr("nas.device.release_memory", lambda device: released.append(device))
    worker, study = _worker(trials=4)
    worker.run()  # four out-of-memory trials in a row do not stop it: three errors would
    trials = [t for t in study.trials if counts(t)]
    assert [t.user_attrs["reason"] for t in trials] == ["oom"] * 4 and len(released) == 4
    assert [t.user_attrs["error"].split(":")[0] for t in trials] == ["CUDA out of memory. Tried to allocate 9.00 GiB",
                                                                     "cuDNN error"] * 2  # fmt: skip


def test_a_gpu_that_cannot_hold_the_data_for_every_job_is_refused_before_anything_starts(here, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("nas.device.free_bytes", lambda device: 20 * 2**20)  # one worker's 10 MiB fit, not three
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # restored after the test
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    code, _, err = search(capsys, "--trials", "2", "--gpus", "0", "--jobs-per-gpu", "3")
    assert code == 2 and err.count("\n") == 1
    assert "MiB of GPU memory per worker, 3 workers; cuda:0 has 20 MiB free" in err and "fewer --jobs-per-gpu" in err
    assert not (here / "studies" / "tiny-synthetic-5M.db").exists()  # refused before the study was made
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # what the workers would inherit


def test_a_retry_queued_twice_trains_once():
    worker, study = _worker(trials=1)
    params = {"stages": 1, "blocks_0": 1, "channels_0": 8, "stem_kernel": 3, "skip_kernel": 1, "block": "basic",
              "optimizer": "sgd", "lr_sgd": 0.05, "batch_size": 64, "schedule": "cosine"}  # fmt: skip
    for _ in range(2):  # two workers failed the same stale trial 7 (SQLite has no row locks)
        study.enqueue_trial(params, user_attrs={"retry_of": 7, "retries": 1})
    worker.run()
    first, second = study.trials[:2]
    assert counts(first) and first.params == params
    assert second.state == TrialState.FAIL and second.user_attrs["reason"] == "duplicate_retry" and not counts(second)


def test_a_queued_retry_is_pending_for_higher_trials():
    from nas.search import slots_taken
    from nas.study import undecided

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({}, user_attrs={"retry_of": 5})  # trial 0, WAITING
    # trial 1: created by a worker whose ask() looked at the queue just before the retry arrived
    later = optuna.Trial(study, study._storage.create_new_trial(study._study_id))
    assert undecided(study.trials[0]) and slots_taken(study.get_trials()) == 2

    def pop_and_decide():  # another worker pops the retry; this time it trains and takes the slot
        time.sleep(0.3)
        retry = study.ask()
        assert retry.number == 0
        retry.set_user_attr("counted", True)

    threading.Thread(target=pop_and_decide).start()
    assert not claim_slot(study, later, 1)  # waited for the retry, which took the only slot


def test_stale_trials_by_heartbeat_and_by_process(monkeypatch):
    import nas.liveness as liveness

    monkeypatch.setattr(liveness, "STALE_S", 60)
    study = optuna.create_study(direction="maximize")
    now = time.time()
    elsewhere = {"host": "b", "machine": "b|boot|ns", "pid": 1}
    old = study.ask()  # another machine, heartbeat 10 minutes ago: dead
    old.set_user_attr("worker", elsewhere)
    old.set_user_attr("counted", True)
    study._storage.set_trial_system_attr(old._trial_id, liveness.HEARTBEAT_KEY, now - 600)
    fresh = study.ask()  # another machine, heartbeat just now: alive, whatever its pid is here
    fresh.set_user_attr("worker", elsewhere)
    study._storage.set_trial_system_attr(fresh._trial_id, liveness.HEARTBEAT_KEY, now)
    gone = study.ask()  # this machine, a pid that does not exist, fresh heartbeat: dead at once
    gone.set_user_attr("worker", {**liveness._me(), "pid": 2**22 + 12345})
    study._storage.set_trial_system_attr(gone._trial_id, liveness.HEARTBEAT_KEY, now)
    unstamped = study.ask()  # no heartbeat yet (inside ask): alive until this worker has watched it STALE_S
    watcher = liveness.Liveness()
    assert sorted(watcher.fail_stale(study)) == [old.number, gone.number]
    states = {t.number: t.state for t in study.trials}
    assert states[fresh.number] == states[unstamped.number] == TrialState.RUNNING
    retries = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in retries] == [old.number]  # only a trial that held a slot
    monkeypatch.setattr(liveness, "STALE_S", 0)
    assert unstamped.number in watcher.fail_stale(study)


def test_one_command_with_several_workers_spawns_them_and_shows_their_trials(here):
    """The --gpus 0,1 path (one spawned process per device entry, polled by the parent), run with
    two CPU entries, on the default SQLite storage."""
    import io

    from nas.device import threads_per_worker
    from nas.progress import Progress
    from nas.search import SearchConfig, run_search

    cfg = SearchConfig(budget=5_000_000, trials=4, space="tiny", dataset="synthetic:200", proxy_epochs=2,
                       devices=("cpu", "cpu"), seed=0, study="multi")  # fmt: skip
    out = io.StringIO()
    progress = Progress(out, live=False)
    study = run_search(cfg, progress)
    summary = progress.summary(study)
    held = [t for t in study.trials if counts(t)]
    assert len(held) == 4 and summary["trained"] == 4
    threads = threads_per_worker(2)  # each spawned worker took its share of the cores, not all of them
    assert all(re.search(r", (\d+) threads?\)$", t.user_attrs["device"])[1] == str(threads) for t in held)
    pids = {t.system_attrs[WORKER_KEY]["pid"] for t in held}
    assert len(pids) <= 2 and os.getpid() not in pids
    assert out.getvalue().count(" val 0.") + out.getvalue().count("pruned after") == 4
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_new_studys_identity_is_marked_made_only_once_complete(monkeypatch):
    """Workers started together open the new study at once: one writes its identity while another
    checks it. "budget", which marks a made study, must come last, or the checker sees a partial
    identity and refuses the study as made with another split."""
    from nas.study import STUDY_IDENTITY, open_search_study

    written = []
    real = optuna.Study.set_user_attr
    monkeypatch.setattr(optuna.Study, "set_user_attr", lambda self, k, v: written.append(k) or real(self, k, v))
    identity = {key: key for key in STUDY_IDENTITY} | {"budget": 1000}
    url = "sqlite:///:memory:"
    study = open_search_study("s", url, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), identity, "x.yaml")
    assert written[-1] == "budget" and set(STUDY_IDENTITY) - {"space"} <= set(written)
    assert study_space(study) == "space"  # a system attr, written before the user attrs: shown as YAML in the note


def test_jobs_per_gpu_sets_the_workers_on_a_gpu_and_on_the_cpu(monkeypatch):
    """--gpus cpu runs one worker unless asked for more (each a copy of torch and the data); a GPU
    runs two by default. The workers are the entries of SearchConfig.devices."""
    import torch

    from nas.cli import search_devices

    assert search_devices("cpu", None) == ("cpu",)
    assert search_devices("cpu", 2) == ("cpu", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert search_devices(None, None) == ("cuda:0", "cuda:0", "cuda:1", "cuda:1")
    assert search_devices("1", 3) == ("cuda:1",) * 3
    with pytest.raises(NasError, match="--jobs-per-gpu must be at least 1"):
        search_devices("cpu", 0)
