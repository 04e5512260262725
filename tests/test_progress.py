import io

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.arch import ArchSpec
from nas.progress import Progress, budget_shares
from nas.recipe import Recipe
from nas.search import SearchConfig

SPEC = ArchSpec(blocks=[1], channels=[8]).to_dict()
RECIPE = Recipe().to_dict()


def add(study, reason=None, value=None, state=TrialState.COMPLETE, params=1000):
    attrs = {"params": params, "macs": 5000, "arch": SPEC, "recipe": RECIPE}
    if reason:
        attrs["reason"] = reason
    else:
        attrs["counted"] = True
    study.add_trial(create_trial(state=state, value=value, user_attrs=attrs, intermediate_values={1: value or 0.1}))


def test_a_log_gets_one_status_line_per_trained_trial_not_per_rejection():
    study = optuna.create_study(direction="maximize")
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.start(study, SearchConfig(budget=5000, trials=3, space="tiny"))
    for i in range(3):
        for _ in range(20):
            add(study, reason="over_budget", state=TrialState.PRUNED, params=9000)
            progress.update(study)
        add(study, value=0.5 + i / 10)
        progress.update(study)
    text = out.getvalue()
    assert text.count("| rejected ") == 3 and text.count(" val 0.") == 3
    assert "trained 3/3 | rejected 60 | running 0 | best 0.7000" in text
    summary = progress.summary(study)
    assert summary["trained"] == 3 and summary["rejected"] == 60 and summary["top"][0]["score"] == 0.7
    assert "nas retrain --trial 62" in out.getvalue()
    assert "60 proposals rejected before training (over budget); 5% of 63 proposals passed the budget check (8% after the first 50)" in out.getvalue()


def test_budget_shares_after_the_first_50():
    study = optuna.create_study(direction="maximize")
    for i in range(100):
        if i < 50 and i % 2 or i >= 50 and i % 10 == 0:
            add(study, reason="over_budget", state=TrialState.PRUNED)
        else:
            add(study, value=0.5)
    share, after_50 = budget_shares(study.trials)
    assert share == 0.7 and after_50 == 0.9


def test_gpu_busy_is_measured_over_the_gpus_in_use(monkeypatch):
    import time

    import torch

    from nas.progress import GpuMonitor

    busy = {0: 90, 1: 70}
    monkeypatch.setattr(torch.cuda, "utilization", lambda i: busy[i])
    monitor = GpuMonitor(("cuda:0", "cuda:0", "cuda:1"), interval=0.01)
    deadline = time.monotonic() + 10
    while len(monitor.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    monitor.stop()
    assert monitor.busy() is None and monitor.describe() == "unavailable (no trial has trained yet)"
    monitor.count_from(0.0)
    assert monitor.indices == [0, 1] and monitor.busy() == pytest.approx(0.8) and monitor.describe() == "80%"


def test_gpu_busy_counts_from_when_the_first_trial_trains(monkeypatch):
    # Sampling starts before the workers are spawned, import torch and load the data: a short search read low.
    import time

    import torch

    from nas.progress import GpuMonitor

    monkeypatch.setattr(torch.cuda, "utilization", lambda i: 0)
    study = optuna.create_study(direction="maximize")
    out = io.StringIO()
    progress = Progress(out, live=False)
    cfg = SearchConfig(budget=5000, trials=1, space="tiny", devices=("cuda:0",))
    progress.start(study, cfg)
    progress.monitor.stop()
    progress.monitor = monitor = GpuMonitor(cfg.devices, interval=3600)  # samples set by hand below
    now = time.time()
    progress.t0 = now - 60  # the run started a minute ago
    monitor.samples = [(now - 50, 0.0), (now - 30, 0.1)]  # workers starting, data loading: no trial yet
    add(study, reason="over_budget", state=TrialState.PRUNED, params=9000)  # rejected: never reaches the GPU
    assert "GPU busy unavailable (no trial has trained yet)" in progress.status_line(study.trials)
    add(study, value=0.5)  # the first trial that trains starts now
    monitor.samples += [(now + 1, 0.9), (now + 2, 0.7)]
    summary = progress.summary(study)
    assert summary["gpu_busy"] == pytest.approx(0.8) and "GPU busy 80%" in out.getvalue()


def test_gpu_busy_says_why_it_is_unavailable(monkeypatch):
    import torch

    from nas.progress import GpuMonitor

    def no_nvml(i):
        raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed or it can't be imported.")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    monitor = GpuMonitor(("cuda:0",))
    assert monitor.busy() is None
    assert monitor.describe() == "unavailable (nvidia-ml-py is not installed: pip install nvidia-ml-py)"
    monkeypatch.setattr(torch.cuda, "utilization", lambda i: (_ for _ in ()).throw(RuntimeError("NVML Shared Library Not Found")))
    assert GpuMonitor(("cuda:0",)).describe() == "unavailable (NVML: NVML Shared Library Not Found)"
    assert GpuMonitor(("cpu",)).indices == []  # a CPU search says nothing about GPUs


def test_the_summary_says_the_gpu_busy_share_or_why_there_is_none(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "utilization", lambda i: (_ for _ in ()).throw(ModuleNotFoundError("no pynvml")))
    study = optuna.create_study(direction="maximize")
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.start(study, SearchConfig(budget=5000, trials=1, space="tiny", devices=("cuda:0",)))
    add(study, value=0.5)
    progress.update(study)
    summary = progress.summary(study)
    assert summary["gpu_busy"] is None
    assert "GPU busy unavailable (nvidia-ml-py is not installed: pip install nvidia-ml-py)" in out.getvalue()


def running_study():
    """One trained trial, one in its third epoch, and a rejected proposal."""
    from nas.study import ARCH_KEY

    study = optuna.create_study(direction="maximize")
    add(study, value=0.5)
    add(study, reason="over_budget", state=TrialState.PRUNED, params=9000)
    trial = study.ask()
    for key, value in {"counted": True, "params": 12345, "arch": "basic 1 x 8"}.items():
        trial.set_user_attr(key, value)
    study._storage.set_trial_system_attr(trial._trial_id, ARCH_KEY, ArchSpec(blocks=[3, 3, 3], channels=[16, 32, 64]).to_dict())
    trial.report(0.3, 1)
    trial.report(0.4, 2)
    return study


def test_the_live_footer_shows_running_trials_with_their_epoch_fitted_to_the_width():
    from rich.console import Console

    study = running_study()
    progress = Progress(io.StringIO(), live=False)
    progress.start(study, SearchConfig(budget=5000, trials=4, space="tiny", proxy_epochs=5))
    out = io.StringIO()
    Console(file=out, width=60).print(progress.footer(study.get_trials()))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert lines[0].startswith("trained 1/4 | rejected 1 | best 0.5000")
    assert lines[-1].startswith("  #2    epoch 3/5, val 0.4000 after 2 | 12.3k basic 3-3-3") and lines[-1].endswith("…")


def test_the_summary_says_why_proposals_were_rejected_and_hides_passwords():
    study = running_study()
    add(study, reason="underfilled", state=TrialState.PRUNED, params=100)
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.start(study, SearchConfig(budget=5000, trials=4, space="tiny", storage="postgresql://me:secret@db/nas"))
    progress.summary(study)
    text = out.getvalue()
    assert "2 proposals rejected before training (1 over budget, 1 under 90% of the budget); 50% of 4 proposals passed" in text
    assert "after the first 50" not in text  # 4 proposals: there is no such share yet
    assert "secret" not in text and "--storage 'postgresql://me:***@db/nas'" in text
    assert "optuna-dashboard 'postgresql://me:***@db/nas' --artifact-dir studies/" in text


def test_at_80_columns_lines_break_at_their_separators_and_the_top_5_line_up():
    from rich.console import Console

    from nas.progress import fit, shell_lines

    study = optuna.create_study(study_name="resnet_cifar-cifar10-5M", direction="maximize")
    for i in range(6):
        add(study, value=0.5 + i / 100, params=1000 * (i + 1) ** 3)
    progress = Progress(io.StringIO(), live=False)
    progress.start(study, SearchConfig(budget=500_000, trials=6, space="tiny", seed=3))
    progress._console = Console(file=(out := io.StringIO()), width=80, highlight=False, markup=False)
    progress.summary(study)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    top = [line for line in lines if line.startswith("  #")]
    assert len(top) == 5 and len({line.index("  basic") for line in top}) == 1  # the architecture in one column
    assert any(line.startswith("  optuna-dashboard ") and line.endswith(" \\") for line in lines)  # pastes whole
    wrapped = fit("#12   val 0.6400  12.6k    3s  " + "basic 1 x 24, stem 24 k5" + " | " + "sgd lr 0.05, cosine, bs 64", 60)
    first, second = wrapped.splitlines()
    assert first.endswith("3s  basic 1 x 24, stem 24 k5") and second == " " * first.index("basic") + "sgd lr 0.05, cosine, bs 64"
    assert shell_lines("nas retrain --trial 5 --study s", 80) == "nas retrain --trial 5 --study s"
