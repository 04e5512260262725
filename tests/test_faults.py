"""Faults and hostile input (issue 19): each test reproduces what a fault probe did to nas, then checks
that nothing stored is lost and that the user gets one line, not a traceback or a hang."""

import errno
import json
import os
import sqlite3
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas.liveness as liveness
import nas.retrain as rt
from nas.bench import append_record
from nas.cli import main
from nas.data import load_dataset, synthetic, validation_split
from nas.errors import NasError, StorageError
from nas.files import check_writable, clean_leftovers
from nas.predict import load_model
from nas.study import counts, open_storage, storage_failure

SMALL_PRESET = "arch:\n  blocks: [1, 1]\n  channels: [8, 16]\nrecipe:\n  optimizer: sgd\n  lr: 0.05\n  epochs: 2\n"
ROOT = os.geteuid() == 0  # chmod does not stop root from writing


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line_error(capsys, argv, *phrases):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err
    return err


# ----------------------------------------------------------------------------------- 1. journals


def _journal_with_trials(path, n=3):
    study = optuna.create_study(study_name="j", storage=open_storage(f"journal:{path}"), direction="maximize")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                                  value=float(i)))  # fmt: skip
    return study


def _plain_optuna_trials(path):
    """What Optuna itself reads, without nas's repair."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))).trials


def test_a_journal_cut_by_a_full_disk_is_repaired_on_the_next_append_and_keeps_every_trial(here):
    path = here / "s.journal"
    _journal_with_trials(path)
    with open(path, "ab") as f:  # what a full disk left: half an operation, no newline
        f.write(b'{"op_code":5,"worker_id":"w","trial_id":0,"us')
    study = optuna.load_study(study_name="j", storage=open_storage(f"journal:{path}"))
    study.set_user_attr("after", 1)  # nas report's note, say: before, this was glued onto the half line
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)
    trials = _plain_optuna_trials(path)  # Optuna itself reads it again, every trial kept
    assert [t.value for t in trials] == [0.0, 1.0, 2.0]
    assert optuna.load_study(study_name="j", storage=open_storage(f"journal:{path}")).user_attrs == {"after": 1}


def test_a_journal_already_glued_by_another_writer_is_repaired_when_opened(here):
    from optuna.storages.journal import JournalFileBackend

    path = here / "s.journal"
    _journal_with_trials(path)
    whole = path.read_bytes()
    plain = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    plain.set_user_attr("glued", 1)
    plain.set_user_attr("next", 2)
    appended = path.read_bytes()[len(whole):]
    # Optuna's own appends after a write cut short: the first is glued onto the half line
    path.write_bytes(whole + b'{"op_code":5,"worker_id":"w","tri' + appended)
    with pytest.raises(json.JSONDecodeError):  # how every command failed from then on
        _plain_optuna_trials(path)
    study = optuna.load_study(study_name="j", storage=open_storage(f"journal:{path}"))
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0] and study.user_attrs == {"glued": 1, "next": 2}
    assert len(_plain_optuna_trials(path)) == 3


def test_a_full_disk_while_appending_is_one_line_and_leaves_the_journal_whole(here, monkeypatch):
    path = here / "s.journal"
    study = _journal_with_trials(path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="cannot write journal .*No space left on device.*nothing stored before"):
        study.set_user_attr("lost", 1)
    assert path.read_bytes() == before  # the failed append was undone: no half line for the next writer
    monkeypatch.undo()
    assert len(_plain_optuna_trials(path)) == 3


def test_sqlite_full_disk_under_optunas_wording_is_one_line(here, capsys, monkeypatch):
    def full(*a, **k):  # how Optuna reports SQLite's full disk
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically "
                                                         "happens due to invalid data in the commit") from e  # fmt: skip

    assert storage_failure(optuna.exceptions.StorageInternalError("invalid data in the commit")) is None
    monkeypatch.setattr("nas.cli.run_count", full)
    one_line_error(capsys, ["count", "--blocks", "1", "--channels", "8"], "cannot write: the disk is full",
                   "run the same command again")  # fmt: skip


# ----------------------------------------------------------------------------- 2. and 5. retrains


def _preset_study(here):
    (here / "small.yaml").write_text(SMALL_PRESET)
    (here / "studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name="s", storage="sqlite:///studies/s.db", direction="maximize")
    data = load_dataset("synthetic:200")
    return study, rt.preset_target(str(here / "small.yaml"), data.shape), data


def test_a_retrain_stopped_after_its_last_epoch_resumes_into_the_test_and_records(here, monkeypatch):
    study, target, data = _preset_study(here)
    out = here / "run"
    real_curves, said = rt.write_curves, []

    def sigterm_while_writing(*a):  # SIGTERM is a KeyboardInterrupt in nas retrain
        raise KeyboardInterrupt

    monkeypatch.setattr(rt, "write_curves", sigterm_while_writing)
    with pytest.raises(KeyboardInterrupt):
        rt.retrain(study, target, data, out=out, log=said.append)
    assert "All 2 epochs are trained and checkpointed" in said[-1] and "--resume" in said[-1]
    assert rt.checkpoint_progress(out / rt.CHECKPOINT) == (2, 2)
    with pytest.raises(NasError, match="trained all 2 epochs .* pass --resume to test and record it"):
        rt.start_epoch(study, target.name, out, resume=False, replace=False)

    monkeypatch.setattr(rt, "write_curves", real_curves)
    said.clear()
    result = rt.retrain(study, target, data, out=out, resume=True, log=said.append)
    assert any("the checkpoint holds all 2 epochs" in line and "testing and recording" in line for line in said)
    assert not any("epoch    1/2" in line or "starting from epoch 1" in line for line in said)  # nothing trained again
    assert result["retrain_epochs"] == 2 and rt.retrains(study)[target.name]["dir"] == str(out)
    assert not (out / rt.CHECKPOINT).exists() and (out / "curves.html").exists()


def test_a_damaged_checkpoint_is_one_line_and_replace_starts_over(here):
    study, target, data = _preset_study(here)
    out = here / "run"
    out.mkdir()
    (out / rt.CHECKPOINT).write_bytes(b"")  # a checkpoint cut short
    with pytest.raises(NasError, match="cannot read checkpoint .*damaged .*pass --replace to start over"):
        rt.start_epoch(study, target.name, out, resume=True, replace=False)
    result = rt.retrain(study, target, data, out=out, replace_earlier=True, log=lambda _: None)
    assert result["retrain_epochs"] == 2 and not (out / rt.CHECKPOINT).exists()


def test_a_kill_during_replace_keeps_the_earlier_model_whole(here, monkeypatch):
    study, target, data = _preset_study(here)
    out = here / "run"
    rt.retrain(study, target, data, out=out, log=lambda _: None)
    earlier = (out / "model.pt").read_bytes()
    real_save = torch.save

    def killed_mid_write(obj, f, *a, **k):
        if str(f).startswith(str(out / "model.pt")):
            with open(f, "wb") as w:
                w.write(b"PK\x03\x04 half a zip")  # what a kill leaves mid-write
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        rt.retrain(study, target, data, out=out, replace_earlier=True, log=lambda _: None)
    monkeypatch.undo()
    assert (out / "model.pt").read_bytes() == earlier  # whole, and nas predict reads it
    load_model(out / "model.pt", torch.device("cpu"))
    assert not list(out.glob("*.tmp*"))


def test_what_a_dead_run_left_half_written_is_cleaned_and_a_live_ones_is_not(here):
    dead = 2**22 + 4321  # above Linux's default pid_max: no such process
    for name in (f"checkpoint.pt.tmp{dead}", f"curves.html.tmp{dead}", f"model.pt.tmp{os.getpid()}", "notes.tmp"):
        (here / name).write_text("x")
    assert sorted(p.name for p in clean_leftovers(here)) == [f"checkpoint.pt.tmp{dead}", f"curves.html.tmp{dead}"]
    assert sorted(p.name for p in here.iterdir()) == [f"model.pt.tmp{os.getpid()}", "notes.tmp"]


def test_a_failed_predict_leaves_an_earlier_csv_as_it_was(here, monkeypatch):
    from PIL import Image

    from nas.predict import predict_folder

    study, target, data = _preset_study(here)
    rt.retrain(study, target, data, out=here / "run", log=lambda _: None)
    (here / "images").mkdir()
    Image.fromarray(data.test_x[0].permute(1, 2, 0).numpy()).save(here / "images" / "a.png")
    csv = here / "predictions.csv"
    csv.write_text("ID,Label\nearlier,class1\n")

    def broken(*a, **k):
        raise RuntimeError("the device went away")

    monkeypatch.setattr("nas.train.predict", broken)
    with pytest.raises(RuntimeError):
        predict_folder(here / "run" / "model.pt", here / "images", csv)
    assert csv.read_text() == "ID,Label\nearlier,class1\n" and not list(here.glob("predictions.csv.tmp*"))


# ------------------------------------------------------------------------------- 3. silent workers


def _silent_trial(study, beat_age):
    """A trial holding a slot whose worker, on another machine, stopped beating `beat_age` s ago."""
    t = study.ask({"stages": optuna.distributions.IntDistribution(1, 1)})
    t.set_user_attr("counted", True)
    t.set_user_attr("worker", "elsewhere pid 7")
    study._storage.set_trial_system_attr(t._trial_id, liveness.WORKER_KEY, {"host": "b", "machine": "b|x|y", "pid": 7})
    study._storage.set_trial_system_attr(t._trial_id, liveness.HEARTBEAT_KEY, time.time() - beat_age)
    return t


def _worker(trials, **cfg):
    from nas.search import SearchConfig, Worker
    from nas.space import load_space
    from nas.study import make_pruner, make_sampler

    config = SearchConfig(budget=5_000_000, trials=trials, space="tiny", proxy_epochs=1, **cfg)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0), pruner=make_pruner("none", 1))
    return Worker(config, load_space("tiny"), study, validation_split(synthetic(100)), "cpu"), study


def test_a_survivor_waits_for_a_silent_workers_trial_and_retrains_it(monkeypatch):
    monkeypatch.setattr(liveness, "SILENT_S", 1)
    monkeypatch.setattr(liveness, "STALE_S", 3)
    worker, study = _worker(trials=1)
    dead = _silent_trial(study, beat_age=1.5)  # silent, not stale yet: before, the survivor exited 0 at once
    start = time.monotonic()
    worker.run()
    assert time.monotonic() - start >= 1  # it waited for the heartbeat to lapse
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL and trials[dead.number].user_attrs["reason"] == "stale"
    trained = [t for t in trials if counts(t)]
    assert len(trained) == 1 and trained[0].user_attrs.get("retry_of") == dead.number
    assert trained[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_a_survivor_out_of_time_names_the_held_trial_and_exits_with_an_error(monkeypatch):
    monkeypatch.setattr(liveness, "SILENT_S", 1)
    worker, study = _worker(trials=1, timeout=1.0)
    dead = _silent_trial(study, beat_age=5)
    with pytest.raises(NasError, match=rf"trial {dead.number} holds a --trials slot, but its worker "
                                       rf"\(elsewhere pid 7\) has been silent .*after 120 s .*run the same command"):  # fmt: skip
        worker.run()


def test_a_live_worker_elsewhere_is_not_waited_for():
    worker, study = _worker(trials=1)
    _silent_trial(study, beat_age=0)  # beating: its worker trains it
    start = time.monotonic()
    worker.run()
    assert time.monotonic() - start < 5 and len(study.trials) == 1


def test_a_zombie_worker_is_gone():
    import subprocess

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while not liveness._zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # exited, not yet reaped: kill(pid, 0) still finds it
    assert liveness._process_gone({**liveness._me(), "pid": child.pid})
    child.wait()


# ------------------------------------------------------------------------------------ 4. passwords


def test_a_recorded_command_line_hides_passwords(tmp_path):
    results = tmp_path / "RESULTS.md"
    append_record(results, "cpu", "nas search --storage postgresql://alice:S3cret@PW@db-host:5432/nas --study big "
                                   "--storage=mysql://bob:hunter2@h/x", [("trials", "3")])  # fmt: skip
    text = results.read_text()
    assert "S3cret" not in text and "hunter2" not in text
    assert "postgresql://alice:***@db-host:5432/nas" in text and "mysql://bob:***@h/x" in text


# ------------------------------------------------------------------------------ 6. costly input


def test_a_yaml_alias_bomb_is_refused_before_it_expands(here, capsys):
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"{b}: &{b} [{','.join(f'*{a}' for _ in range(9))}]" for a, b in zip("abcdefgh", "bcdefghi")]
    (here / "bomb.yaml").write_text("\n".join(rows) + "\n")  # 9^9 = 387M strings from 600 bytes
    start = time.monotonic()
    one_line_error(capsys, ["count", "--space", "bomb.yaml", "--budget", "1M"], "aliases expand to more than 100,000")
    assert time.monotonic() - start < 5
    (here / "loop.yaml").write_text("a: &a [1, *a]\n")
    one_line_error(capsys, ["count", "--space", "loop.yaml", "--budget", "1M"], "cannot be recursive")


def test_space_values_past_what_can_run_are_refused(here, capsys):
    (here / "holes.yaml").write_text("arch: {stages: 1, blocks: 1, channels: 8}\n"
                                     "recipe: {cutout: 4, cutout_holes: {int: [1, 100000000]}}\n")  # fmt: skip
    one_line_error(capsys, ["count", "--space", "holes.yaml", "--budget", "1M"], "cutout_holes can be at most 64")


# ---------------------------------------------------------------------------- 7. silently wrong


def _images(root, classes=("ant", "cat")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


def test_an_image_overwritten_in_place_is_decoded_again(tmp_path):
    from PIL import Image

    _images(tmp_path)
    first = load_dataset(f"imagefolder:{tmp_path}")
    folder = tmp_path / "train" / "ant"
    stamp = os.stat(folder).st_mtime_ns
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(folder / "0.png")  # same name, new pixels
    os.utime(folder, ns=(stamp, stamp))  # and the folder's own time as it was
    again = load_dataset(f"imagefolder:{tmp_path}")
    assert not torch.equal(again.train_x, first.train_x) and int(again.train_x[0].float().mean()) == 7


def test_a_cache_holding_what_weights_only_refuses_is_rebuilt(tmp_path):
    _images(tmp_path)
    first = load_dataset(f"imagefolder:{tmp_path}")
    cache = next((tmp_path / ".nas-cache").glob("*.pt"))
    torch.save({"version": 1, "evil": optuna.distributions.FloatDistribution(0, 1)}, cache)  # not a plain tensor dict
    assert torch.equal(load_dataset(f"imagefolder:{tmp_path}").train_x, first.train_x)


def test_a_single_class_folder_is_refused(tmp_path):
    _images(tmp_path, classes=("only",))
    with pytest.raises(NasError, match="one class folder .*two or more"):
        load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.parametrize("argv,phrase", [
    (["retrain", "--top", "-1"], "--top K needs K of at least 1"),
    (["retrain", "--top", "0"], "--top K needs K of at least 1"),
])  # fmt: skip
def test_top_below_one_is_refused(here, capsys, argv, phrase):
    optuna.create_study(study_name="s", storage=f"sqlite:///{here}/s.db")
    one_line_error(capsys, [*argv, "--storage", f"sqlite:///{here}/s.db"], phrase)


@pytest.mark.parametrize("argv,phrase", [
    (["--timeout", "0"], "a duration must be more than 0"),
    (["--budget", "1e400"], "too large"),
    (["--seed", "-1"], "a seed is between 0 and"),
])  # fmt: skip
def test_flags_that_meant_something_else_are_refused(here, capsys, argv, phrase):
    with pytest.raises(SystemExit) as e:  # argparse's own one line
        main(["search", "--space", "tiny", "--dataset", "synthetic:200", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and phrase in err and "Traceback" not in err


def test_a_study_name_leading_out_of_studies_is_refused(here, capsys):
    optuna.create_study(study_name="../../escaped", storage=f"sqlite:///{here}/shared.db")
    one_line_error(capsys, ["report", "--storage", f"sqlite:///{here}/shared.db"], "cannot be a folder name")
    assert not (here.parent / "escaped").exists() and not (here / "studies").exists()


# ---------------------------------------------------------------------------- 8. one line, early


def test_a_non_utf8_space_file_is_one_line(here, capsys):
    (here / "latin1.yaml").write_bytes("arch: {stages: 1}\n# café\n".encode("latin-1"))
    one_line_error(capsys, ["count", "--space", "latin1.yaml", "--budget", "1M"], "not UTF-8 text")


def test_an_output_where_a_file_stands_is_refused_before_the_work(here, capsys):
    study, target, data = _preset_study(here)
    (here / "file").write_text("not a folder")
    with pytest.raises(StorageError, match="cannot write the retrain's files in .*file/run"):
        rt.check_outputs(study, here / "file" / "run")
    with pytest.raises(SystemExit) as e:  # argparse's one line, before any data is loaded
        main(["search", "--space", "tiny", "--dataset", "synthetic:200", "--record", "file/r.md"])
    assert e.value.code == 2 and "--record: folder file does not exist" in capsys.readouterr().err


@pytest.mark.skipif(ROOT, reason="root writes through chmod; the read-only bind mount of the probe needs privileges")
def test_read_only_folders_are_refused_before_the_work(here, capsys):
    study, target, data = _preset_study(here)
    locked = here / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="cannot write"):
            check_writable(locked, "the retrain's files")
        one_line_error(capsys, ["search", "--space", "tiny", "--dataset", "synthetic:200",
                                "--storage", f"journal:{locked}/s.journal"], "cannot write")  # fmt: skip
        with pytest.raises(SystemExit):
            main(["search", "--space", "tiny", "--record", f"{locked}/RESULTS.md"])
    finally:
        locked.chmod(0o755)


def test_the_writability_check_sees_a_folder_the_system_will_not_write(here, monkeypatch):
    """The same check as root sees it on a read-only mount: creating a file there fails."""
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(StorageError, match="cannot write the study's artifacts in .*: Read-only file system"):
        check_writable(here, "the study's artifacts")
