"""Peak activation memory: the closed form against a liveness walk over the torch graph, and the
--max-ram limit of a search (its own reason and constraint, as --max-macs), the count and the report."""

import random

import pytest
from optuna.trial import TrialState

import nas.train
from nas.arch import ArchSpec
from nas.blocks import BLOCKS
from nas.cli import main
from nas.count import count_peak_memory
from nas.export import graph_peak_memory
from nas.model import build_model
from nas.space import load_preset
from nas.study import counts, load_study
from test_count import random_spec

PER_BLOCK = 24  # benchmarks/peak_memory.py walks 150 per block
FAST = ["--space", "tiny", "--dataset", "synthetic:200", "--proxy-epochs", "2", "--gpus", "cpu", "--seed", "0"]


@pytest.mark.parametrize("block", list(BLOCKS))
def test_the_closed_form_equals_the_graph_walk_on_random_specs(block):
    specs = [random_spec(random.Random(1000 + seed), block) for seed in range(PER_BLOCK)]
    assert {s.se > 0 for s in specs} == {True, False} and len({s.pool for s in specs}) >= 3
    for spec in specs:
        model = build_model(spec)
        assert count_peak_memory(spec) == graph_peak_memory(model, spec), spec.describe()
        assert count_peak_memory(spec, 4) == 4 * count_peak_memory(spec)


def test_resnet8_peaks_at_the_first_blocks_add():
    """By hand: three 16 x 32 x 32 maps (the skip, the branch, the sum) at one byte each."""
    _, spec, _ = load_preset("mlperf-tiny-resnet8")
    assert count_peak_memory(spec) == 3 * 16 * 32 * 32 == 49_152
    assert graph_peak_memory(build_model(spec), spec, 4) == 4 * 49_152


def test_an_mbconv_residual_holds_its_input_through_the_wide_maps():
    """Input 8 x 16 x 16, expanded 6x to 48 channels: with the residual (8 -> 8) the input waits
    beside the wide map and the depthwise output; without it (8 -> 16) it is freed after the expand."""
    kw = dict(blocks=[1], stem_channels=8, block="mbconv", expansion=6, image_size=16, in_channels=1)
    x, wide = 8 * 256, 48 * 256
    assert count_peak_memory(ArchSpec(channels=[8], **kw)) == x + 2 * wide
    assert count_peak_memory(ArchSpec(channels=[16], **kw)) == 2 * wide


def test_nas_count_prints_the_peak(capsys):
    assert main(["count", "--preset", "mlperf-tiny-resnet8"]) == 0
    assert "peak RAM             49,152  bytes" in capsys.readouterr().out


def test_a_ram_limit_rejects_with_its_own_reason_and_constraint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = []
    real = nas.train.build_model
    monkeypatch.setattr(nas.train, "build_model", lambda spec: built.append(spec) or real(spec))
    code = main(["search", *FAST, "--trials", "2", "--max-ram", "40k"])
    out, _ = capsys.readouterr()
    assert code == 0 and "tiny-synthetic-5M-40kram" in out
    study = load_study(None, "tiny-synthetic-5M-40kram")
    assert study.user_attrs["max_ram"] == 40_000
    over = [t for t in study.trials if t.user_attrs.get("reason") == "over_ram"]
    assert over, "the tiny space should propose nets over 40k bytes (16 channels at 32 px already hold 48k)"
    for t in over:  # within the parameter budget, over the RAM limit: its own constraint says so
        assert t.state == TrialState.PRUNED and not counts(t) and not t.intermediate_values
        assert t.user_attrs["ram"] > 40_000 and t.constraints["ram"] > 0 and t.constraints["budget"] <= 0
    assert len(built) == 2 and all(count_peak_memory(s) <= 40_000 for s in built)
    assert all(t.constraints["ram"] <= 0 for t in study.trials if counts(t))
    code = main(["search", *FAST, "--trials", "2", "--max-ram", "50k", "--study", "tiny-synthetic-5M-40kram"])
    assert code == 2 and "max_ram" in capsys.readouterr().err  # another limit, another study
    code = main(["search", *FAST, "--max-ram", "1000"])
    err = capsys.readouterr().err
    assert code == 2 and "fits a limit of 1,000 bytes of peak activation memory" in err and "smallest" in err


def test_under_a_ram_limit_the_report_shows_the_ram_figures():
    import optuna
    from optuna.trial import create_trial
    from test_retrain_report import made_up_study

    from nas.report import accuracy_vs, budget_check, leaderboard
    from nas.study import trial_arch

    made = made_up_study(budget=10**8)
    study = optuna.create_study(direction="maximize")
    for key, value in {**made.user_attrs, "max_ram": 20_000}.items():
        study.set_user_attr(key, value)
    for t in made.trials:  # with the peak nas search stores beside params and MACs
        ram = count_peak_memory(ArchSpec.from_dict(trial_arch(t)))
        study.add_trial(create_trial(state=t.state, value=t.value, user_attrs={**t.user_attrs, "ram": ram},
                                     intermediate_values=t.intermediate_values, system_attrs=t.system_attrs))
    df = leaderboard(study)
    assert df.loc[df["name"] == "preset-resnet18", "state"].item() == "over budget"  # 196k bytes: over the RAM limit
    assert list(df.query("state == 'complete'")["ram"]) == [3 * 16 * 32 * 32, 3 * 8 * 32 * 32]
    fig = accuracy_vs(study, df, "ram")
    assert "RAM limit 20,000" in {t.name for t in fig.data} and "peak activation" in fig.layout.xaxis.title.text
    check = {t.name: t for t in budget_check(study, "ram").data}
    assert "RAM limit 20,000" in check and sorted(check["trained (2)"].y) == [3 * 8 * 32 * 32, 3 * 16 * 32 * 32]
