"""Per-device choices (nas.device) and that training, evaluation and prediction all follow them."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas.arch import ArchSpec
from nas.data import synthetic, validation_split
from nas.device import memory_format, resolve_device
from nas.model import build_model
from nas.recipe import Recipe
from nas.train import evaluate, fit, predict

SPEC = ArchSpec(blocks=[1, 1], channels=[8, 16])


def layout(x: torch.Tensor) -> set[str]:
    nhwc, nchw = x.is_contiguous(memory_format=torch.channels_last), x.is_contiguous()
    return set() if nhwc and nchw else {"channels_last"} if nhwc else {"contiguous"}  # 1x1 kernels are both


class ConvLayouts(TorchDispatchMode):
    """Records the memory layout of the images a model is fed (the stem convolution's input) and of
    every convolution's weight: what the data pipeline and the model were given."""

    def __init__(self):
        super().__init__()
        self.layouts = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.convolution:
            x, weight = args[0], args[1]
            self.layouts |= layout(weight)
            if x.shape[1] == 3:  # the images themselves
                self.layouts |= layout(x)
        return func(*args, **(kwargs or {}))


def layouts_of_a_run():
    split = validation_split(synthetic(100), val_size=20)
    with ConvLayouts() as train_mode:
        result = fit(SPEC, Recipe(epochs=1, batch_size=20), split, device="cpu")
    with ConvLayouts() as eval_mode:
        evaluate(result.model, split.val_x, split.val_y, split.mean, split.std)
        predict(result.model, split.val_x, split.mean, split.std)
    return train_mode.layouts, eval_mode.layouts


def test_the_cpu_trains_evaluates_and_predicts_in_nchw():
    # channels_last on the CPU crashes oneDNN's backward in torch 2.14.1 (SIGSEGV).
    assert memory_format(torch.device("cpu")) == torch.contiguous_format
    assert layouts_of_a_run() == ({"contiguous"}, {"contiguous"})


def test_every_stage_follows_the_layout_chosen_for_the_device(monkeypatch):
    # As on CUDA: channels_last everywhere. oneDNN off, as its channels_last backward is what crashes.
    monkeypatch.setattr("nas.train.memory_format", lambda device: torch.channels_last)
    with torch.backends.mkldnn.flags(enabled=False):
        assert layouts_of_a_run() == ({"channels_last"}, {"channels_last"})


def test_cuda_is_chosen_with_an_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for name in (None, "cuda"):
        device = resolve_device(name)
        assert device == torch.device("cuda", 1)
        assert torch.cuda._utils._get_device_index(device) == 1  # what torch.cuda.set_device asks
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert memory_format(resolve_device("cuda")) == torch.channels_last
    with pytest.raises(ValueError, match="2 GPU"):
        resolve_device("cuda:5")


def test_bad_device_names_are_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu7")


def test_a_model_built_for_prediction_takes_the_device_layout(tmp_path):
    from nas.predict import load_model

    model = build_model(SPEC)
    torch.save({"model": model.state_dict(), "spec": SPEC.to_dict()}, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path / "model.pt", torch.device("cpu"))
    conv = next(m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
