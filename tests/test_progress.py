import io

import optuna
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
    assert summary["trained"] == 3 and summary["rejected"] == 60 and summary["top"][0]["val_acc"] == 0.7
    assert "nas retrain --trial 62" in out.getvalue()


def test_budget_shares_after_the_first_50():
    study = optuna.create_study(direction="maximize")
    for i in range(100):
        if i < 50 and i % 2 or i >= 50 and i % 10 == 0:
            add(study, reason="over_budget", state=TrialState.PRUNED)
        else:
            add(study, value=0.5)
    share, after_50 = budget_shares(study.trials)
    assert share == 0.7 and after_50 == 0.9
