"""nas export: ONNX of every block family equal to torch, the int8 path end to end on a retrain of
synthetic data, and the refusals (no retrain, onnxruntime disagreeing, no onnx installed)."""

import json
import random
import sys

import numpy as np
import optuna
import pytest
import torch

import nas.export
from nas.blocks import BLOCKS
from nas.cli import main
from nas.export import Deployable, onnx_logits, torch_logits, write_onnx
from nas.model import build_model
from test_count import random_spec

PER_BLOCK = 3


def trained_looking(spec):
    """A model whose BatchNorms are not the identity they start as, so that folding them is tested."""
    model = build_model(spec)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo, hi in ((m.weight.data, 0.5, 1.5), (m.bias.data, -0.5, 0.5), (m.running_mean, -0.5, 0.5),
                              (m.running_var, 0.5, 2.0)):  # fmt: skip
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


@pytest.mark.parametrize("block", list(BLOCKS))
def test_onnx_equals_torch_for_every_block_family(block, tmp_path):
    specs = [random_spec(random.Random(seed), block) for seed in range(100)]
    # SE on and off, a global and a fixed pool, among the few exported
    picked = [next(s for s in specs if s.se and s.pool == "global"), next(s for s in specs if not s.se and s.pool != "global")]
    picked += [s for s in specs if s not in picked][: PER_BLOCK - 2]
    for i, spec in enumerate(picked):
        mean, std = (0.5,) * spec.in_channels, (0.25,) * spec.in_channels
        model = trained_looking(spec)
        module = Deployable(model, mean, std)
        path = tmp_path / f"{i}.onnx"
        write_onnx(module, spec, path)
        images = torch.randint(0, 256, (32, spec.in_channels, spec.image_size, spec.image_size), dtype=torch.uint8)
        got, want = onnx_logits(path, images), torch_logits(module, images)
        assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max()), spec.describe()
        assert (got.argmax(1) == want.argmax(1)).all(), spec.describe()
        # the same as the unfolded model (left as it was) fed normalised images: folding and normalisation are exact
        plain = model((images.float() / 255 - 0.5) / 0.25).detach().numpy()
        assert np.abs(plain - want).max() <= 1e-3 * max(1.0, np.abs(want).max())


@pytest.fixture
def retrained(tmp_path, monkeypatch):
    """A study holding a 1-epoch retrain of ResNet-8 on synthetic images."""
    from nas import retrain as rt
    from nas.data import load_dataset

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("dataset", "synthetic:200")
    data = load_dataset("synthetic:200")
    rt.retrain(study, rt.preset_target("mlperf-tiny-resnet8", data.shape), data, epochs=1, out=tmp_path / "r",
               log=lambda line: None)  # fmt: skip
    return ["--study", "s", "--storage", url]


def test_export_int8_end_to_end(retrained, tmp_path, capsys):
    from nas.data import load_dataset

    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained, "--int8", "--calibration", "64"]) == 0
    out = capsys.readouterr().out
    assert "preset-mlperf-tiny-resnet8: onnx test accuracy" in out and "int8" in out and "49,152 bytes" in out
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert {"model.onnx", "model.int8.onnx", "export.json", "model.pt"} <= set(files)
    assert not [f for f in files if ".partial" in f]
    r = json.loads((tmp_path / "r" / "export.json").read_text())
    assert r["test_acc_onnx"] == r["test_acc_torch"] and r["max_logit_diff"] <= r["logit_tolerance"]
    assert r["checked_images"] == len(load_dataset("synthetic:200").test_y)
    assert r["calibration_images"] == 64 and 0 <= r["test_acc_int8"] <= 1
    assert r["int8_drop"] == pytest.approx(r["test_acc_onnx"] - r["test_acc_int8"])
    assert r["int8_bytes"] < r["onnx_bytes"] and r["batchnorm_left"] == 0  # every BN follows a conv in ResNet-8
    assert r["peak_ram_int8"] == r["peak_ram_measured_int8"] == 49_152
    study = optuna.load_study(study_name="s", storage=retrained[3])
    stored = study._storage.get_study_system_attrs(study._study_id)["nas:export:preset-mlperf-tiny-resnet8"]
    assert stored == r and study.user_attrs["export:preset-mlperf-tiny-resnet8"].startswith("onnx test accuracy")
    # a float-only export again replaces both files, so no int8 model of another export is left beside it
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained]) == 0
    assert not (tmp_path / "r" / "model.int8.onnx").exists()


def test_export_refuses_where_no_retrain_exists(retrained, capsys):
    assert main(["export", "--preset", "resnet20", *retrained]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "preset-resnet20 has not been retrained" in err
    assert "run: nas retrain --preset resnet20 --study s --storage sqlite:///" in err


def test_an_export_onnxruntime_disagrees_with_writes_nothing(retrained, tmp_path, capsys, monkeypatch):
    real = nas.export.onnx_logits
    monkeypatch.setattr(nas.export, "onnx_logits", lambda path, images: real(path, images) + 0.5)
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained]) == 2
    assert "onnxruntime disagrees with torch" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["curves.html", "history.csv", "metrics.json", "model.pt"]


def test_without_onnxruntime_export_says_what_to_install(retrained, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained]) == 2
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_export_finds_a_retrain_by_its_seed_and_scaling(retrained, capsys):
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "preset-mlperf-tiny-resnet8-seed1 has not been retrained" in err and "--seed 1" in err
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained, "--fit-budget"]) == 2
    err = capsys.readouterr().err
    assert "preset-mlperf-tiny-resnet8-fit has not been retrained" in err and "--preset mlperf-tiny-resnet8 --fit-budget" in err
    assert main(["export", "--preset", "mlperf-tiny-resnet8", *retrained, "--seed", "0"]) == 0  # the recipe's seed: the first
    assert main(["export", "--trial", "0", *retrained, "--fit-budget"]) == 2
    assert "use it with --preset" in capsys.readouterr().err
