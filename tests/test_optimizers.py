"""Every registered optimizer, as nas.train builds it: its class and flags agree with torch."""

import importlib
import inspect

import pytest
import torch

from nas.arch import ArchSpec
from nas.model import build_model
from nas.recipe import OPTIMIZERS, Recipe
from nas.train import DEVICE_FLAGS, load_optimizer_state, make_optimizer


def optimizer_class(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_flags_agree_with_the_class(name):
    info = OPTIMIZERS[name]
    cls = optimizer_class(info.cls)
    assert issubclass(cls, torch.optim.Optimizer)
    takes = set(inspect.signature(cls).parameters)
    assert ("momentum" in takes) >= info.momentum  # the flag is set only where torch has the argument
    assert info.fused <= ("fused" in takes) and info.foreach <= ("foreach" in takes)
    assert set(info.kwargs) | set(info.cuda_kwargs) <= takes
    low, high = info.lr
    assert 0 < low < high


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_make_optimizer_builds_each_entry_and_it_steps(name):
    info = OPTIMIZERS[name]
    torch.manual_seed(0)
    model = build_model(ArchSpec(blocks=[1], channels=[8], image_size=8))
    recipe = Recipe(optimizer=name, lr=info.lr[0], momentum=0.8)
    opt = make_optimizer(model, recipe, torch.device("cpu"))
    assert isinstance(opt, optimizer_class(info.cls))
    group = opt.param_groups[0]
    assert group["lr"] == info.lr[0]
    if info.momentum:
        assert group["momentum"] == 0.8
    for key, value in info.kwargs.items():
        assert group[key] == value
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_cuda_gets_the_fast_implementation(name):
    """On CUDA an entry gets fused=True, else foreach=True, plus its CUDA-only arguments. Building
    needs no GPU (torch checks the devices at the first step), so the CPU checks the arguments."""
    info = OPTIMIZERS[name]
    opt = make_optimizer(torch.nn.Linear(2, 2), Recipe(optimizer=name), torch.device("cuda"))
    assert opt.defaults.get("fused") is (True if info.fused else None)
    assert opt.defaults.get("foreach") is (True if info.foreach and not info.fused else None)
    assert {k: opt.defaults[k] for k in info.cuda_kwargs} == dict(info.cuda_kwargs)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("written,resumed", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_state_from_another_device_type_loads_with_this_devices_flags(name, written, resumed):
    """A checkpoint's param groups hold the writing device's fused/foreach/capturable; the resuming run keeps
    what make_optimizer chose for its own device (fused is not lost on the way to CUDA, nor capturable kept
    on the way to the CPU). Building and loading need no GPU (torch checks the devices at the first step)."""
    torch.manual_seed(0)
    model = build_model(ArchSpec(blocks=[1], channels=[8], image_size=8))
    recipe = Recipe(optimizer=name)
    source = make_optimizer(model, recipe, torch.device(written))
    if written == "cpu":  # a state with step counters, as a checkpoint after some training holds
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
        source.step()
    target = make_optimizer(model, recipe, torch.device(resumed))
    fresh = [{k: g[k] for k in DEVICE_FLAGS if k in g} for g in target.param_groups]
    load_optimizer_state(target, source.state_dict())
    assert [{k: g[k] for k in DEVICE_FLAGS if k in g} for g in target.param_groups] == fresh
    assert len(target.state) == len(source.state)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_in_fp16_only_the_optimizers_said_to_sync_make_the_host_wait(name, op_log):
    """GradScaler's step reads its overflow check back to the host (an .item()) unless the optimizer is fused
    and skips inside its kernel: OptimInfo.fp16_syncs says which. The optimizer is built as on CUDA (less
    ASGD's capturable, which the CPU refuses) and run on the CPU in fp16, its own step outside the op log
    (on CUDA its step counters are host tensors, so reading them makes nothing wait)."""
    from torch.utils._python_dispatch import _disable_current_modes

    info = OPTIMIZERS[name]
    torch.manual_seed(0)
    model = build_model(ArchSpec(blocks=[1], channels=[8], image_size=8))
    opt = make_optimizer(model, Recipe(optimizer=name, lr=info.lr[0]), torch.device("cuda"))
    for group in opt.param_groups:
        if group.get("capturable"):
            group["capturable"] = False
    own_step = opt.step

    def step_unlogged(*args, **kwargs):
        with _disable_current_modes():
            return own_step(*args, **kwargs)

    opt.step = step_unlogged
    scaler = torch.amp.GradScaler("cpu")
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])

    def train_step():
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), t)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    train_step()  # the scaler's first step builds its state
    with op_log() as log:
        for _ in range(3):
            train_step()
    assert log.ops.count("_local_scalar_dense") == (3 if info.fp16_syncs else 0)
    assert [n for n, o in OPTIMIZERS.items() if o.fp16_syncs] == ["adadelta", "asgd", "rmsprop"]  # README says so
