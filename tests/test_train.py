import math

import pytest
import torch

from nas.arch import ArchSpec
from nas.data import synthetic, validation_split
from nas.recipe import OPTIMIZERS, SCHEDULES, Recipe
from nas.train import FitResult, fit, lr_factor


@pytest.fixture(scope="module")
def split():
    return validation_split(synthetic(600), val_size=100)


SPEC = ArchSpec(blocks=[1, 1], channels=[8, 16])


def killed_after(last: int, spec, recipe, data, ckpt) -> None:
    """A run killed after epoch `last`, checkpointing every epoch."""

    class Killed(Exception):
        pass

    def kill(epoch, _):
        if epoch == last:
            raise Killed

    with pytest.raises(Killed):
        fit(spec, recipe, data, checkpoint=ckpt, checkpoint_every=1, on_epoch=kill)


def strip(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_a_small_net_learns_synthetic_data(split):
    result = fit(SPEC, Recipe(epochs=5, batch_size=25, lr=0.05, schedule="onecycle"), split)
    assert result.status == "complete" and len(result.history) == 5
    assert result.final["val_acc"] > 0.35  # chance is 0.1; seeds 0-3 give 0.52-0.72
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert set(result.final) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                                 "train_seconds", "threads"}


def test_on_epoch_sees_every_epoch_and_can_stop_the_run(split):
    seen = []

    class Stop(Exception):
        pass

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics["val_acc"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(SPEC, Recipe(epochs=5, batch_size=100), split, on_epoch=on_epoch)
    assert [e for e, _ in seen] == [1, 2]


def test_scoring_every_few_epochs_leaves_the_training_as_it_was(split):
    recipe = Recipe(epochs=3, batch_size=50, cutout=4, seed=1)
    every, sparse = fit(SPEC, recipe, split), fit(SPEC, recipe, split, score_every=2)
    assert [math.isnan(r["val_acc"]) for r in sparse.history] == [True, False, False]  # epochs 2 and the last
    assert [r["val_acc"] for r in sparse.history[1:]] == [r["val_acc"] for r in every.history[1:]]
    assert [r["train_loss"] for r in sparse.history] == [r["train_loss"] for r in every.history]
    assert all(torch.equal(a, b) for a, b in zip(every.model.state_dict().values(), sparse.model.state_dict().values()))


def test_resume_after_an_interruption_gives_the_same_history(split, tmp_path):
    recipe = Recipe(epochs=4, batch_size=50, lr=0.05, schedule="cosine-restarts", restart_every=2,
                    mixup=0.2, cutmix=1.0, cutout=4, seed=3)  # fmt: skip
    spec = ArchSpec(blocks=[1, 1], channels=[8, 16], dropout=0.1, drop_path=0.1)
    straight = fit(spec, recipe, split)

    ckpt = tmp_path / "run.ckpt"
    killed_after(2, spec, recipe, split, ckpt)
    resumed = fit(spec, recipe, split, checkpoint=ckpt, checkpoint_every=1, resume=True)
    assert strip(resumed.history) == strip(straight.history)
    assert not list(tmp_path.glob("*.tmp*"))  # writes were atomic: no temp files left


def test_resume_refuses_a_checkpoint_of_another_run(split, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    fit(SPEC, Recipe(epochs=1, batch_size=100), split, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another architecture or recipe"):
        fit(SPEC, Recipe(epochs=2, batch_size=100), split, checkpoint=ckpt, resume=True)


def test_nan_loss_ends_the_run_with_a_status(split):
    result = fit(SPEC, Recipe(epochs=3, batch_size=50, lr=1e30, schedule="constant", momentum=0.0), split)
    assert isinstance(result, FitResult) and result.status == "nan"
    assert "loss became" in result.message and len(result.history) == 1


def test_the_tenth_compiled_run_of_a_process_is_still_compiled(monkeypatch):
    # Each architecture added its compiled variants (train, eval, the short last eval batch) of ResNet.forward to
    # one cache; from the fifth run here on, torch's recompile limit (8) made every step run eager, silently.
    graph_calls = []

    def counting_backend(graph, example_inputs):  # dynamo's eager backend, counting the compiled graph's calls
        def run(*args):
            graph_calls[-1] += 1
            return graph.forward(*args)

        return run

    monkeypatch.setattr("nas.train.COMPILE_BACKEND", counting_backend)
    monkeypatch.setattr("nas.train.EVAL_BATCH", 16)  # 20 validation images: a short last batch, as in a search
    data = validation_split(synthetic(60, size=8), val_size=20)
    for width in range(8, 88, 8):  # ten trials of ten architectures in one worker process
        graph_calls.append(0)
        result = fit(ArchSpec(blocks=[1], channels=[width], image_size=8), Recipe(epochs=1, batch_size=20), data,
                     compile=True)  # fmt: skip
        assert result.status == "complete"
    assert graph_calls == [2] * 10  # both training steps of every run, compiled; evaluation eager


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(split, optimizer):
    lr = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "adadelta": 1.0, "adagrad": 0.01}.get(optimizer, 0.05)
    result = fit(SPEC, Recipe(optimizer=optimizer, lr=lr, epochs=1, batch_size=100, decay_norm_bias=False), split)
    assert result.status == "complete" and math.isfinite(result.final["train_loss"])


def test_schedules_have_their_shapes():
    at = lambda sched, t, **kw: lr_factor(Recipe(schedule=sched, epochs=100, **kw), t)  # noqa: E731
    assert at("constant", 50) == 1.0
    assert at("step", 29.9, step_every=30, gamma=0.2) == 1.0 and at("step", 61, step_every=30, gamma=0.2) == pytest.approx(0.04)
    assert at("cosine", 0) == 1.0 and at("cosine", 50) == pytest.approx(0.5) and at("cosine", 100) == pytest.approx(0.0)
    assert at("cosine-restarts", 49.9, restart_every=50) < 0.01 and at("cosine-restarts", 50, restart_every=50) == 1.0
    assert at("cosine-restarts", 50, restart_every=50, restart_decay=0.5) == 0.5
    assert at("warmup-cosine", 2.5, warmup_epochs=5) == 0.5 and at("warmup-cosine", 5, warmup_epochs=5) == 1.0
    assert at("onecycle", 0) == pytest.approx(0.04) and at("onecycle", 25) == pytest.approx(1.0) and at("onecycle", 100) == 0.0
    assert set(SCHEDULES) == {"constant", "step", "cosine", "cosine-restarts", "warmup-cosine", "onecycle"}


def test_compressed_recipe_keeps_the_schedule_shape():
    full = Recipe(schedule="cosine-restarts", restart_every=50, epochs=200, warmup_epochs=8, step_every=60)
    short = full.compressed(4)
    assert short.epochs == 4 and short.restart_every == 1.0 and short.step_every == pytest.approx(1.2)
    for frac in (0.1, 0.3, 0.6, 0.99):
        assert lr_factor(short, 4 * frac) == pytest.approx(lr_factor(full, 200 * frac))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(optimizer="lamb"), "optimizer must be one of"),
        (dict(schedule="linear"), "schedule must be one of"),
        (dict(lr=0), "lr must be positive"),
        (dict(batch_size=12.5), "batch_size must be an integer"),
        (dict(momentum=1.2), "momentum"),
        (dict(optimizer="sgd-nesterov", momentum=0), "needs a momentum"),
        (dict(flip="yes"), "true or false"),
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(mixup=-1), "cannot be negative"),
    ],
)
def test_bad_recipe_gives_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        Recipe(**kwargs)
    assert "\n" not in str(e.value)


def test_recipe_dict_round_trip_and_unknown_key():
    r = Recipe(optimizer="adamw", lr=3e-4, cutout=8, mixup=0.2)
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown recipe key 'learning_rate'"):
        Recipe.from_dict({"learning_rate": 0.1})


def test_data_must_fit_the_architecture(split):
    with pytest.raises(ValueError, match="expects 100 classes"):
        fit(ArchSpec(blocks=[1], channels=[8], classes=100), Recipe(epochs=1), split)


# ------------------------------------------------------------------------- precision and memory


@pytest.fixture(scope="module")
def small():
    return validation_split(synthetic(200, size=16), val_size=40)


def test_fp16_trains_with_a_loss_scaler_whose_state_is_checkpointed_and_resumed_exactly(small, tmp_path):
    # fp16 autocast on the CPU is slow (no fp16 kernels), hence the small split; on GPUs without bf16 it is the fast path
    recipe = Recipe(epochs=2, batch_size=40, lr=0.05, precision="fp16", grad_clip=1.0, seed=1)
    spec = ArchSpec(blocks=[1, 1], channels=[8, 16], image_size=16)
    straight = fit(spec, recipe, small)
    assert straight.status == "complete" and straight.precision == "fp16"

    ckpt = tmp_path / "run.ckpt"
    killed_after(1, spec, recipe, small, ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["precision"] == "fp16" and state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
    resumed = fit(spec, recipe, small, checkpoint=ckpt, resume=True)
    assert strip(resumed.history) == strip(straight.history)


def test_resuming_in_another_precision_says_so(split, tmp_path, caplog):
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(SPEC, Recipe(epochs=2, batch_size=100, precision="fp32"), split, checkpoint=ckpt, checkpoint_every=1,
            on_epoch=lambda e, m: (_ for _ in ()).throw(KeyboardInterrupt))  # fmt: skip
    resumed = fit(SPEC, Recipe(epochs=2, batch_size=100, precision="bf16"), split, checkpoint=ckpt, resume=True)
    assert resumed.status == "complete" and len(resumed.history) == 2 and resumed.precision == "bf16"
    assert "in bf16; it was trained in fp32 so far" in caplog.text


def write_cuda_checkpoint(split, path):
    """A checkpoint as nas (version 1) wrote it on a GPU: the CUDA generators' states are Philox
    seed/offset pairs (16 bytes), which a CPU generator refuses."""
    killed_after(1, SPEC, RESUMED, split, path)
    state = torch.load(path, weights_only=True)
    for key in ("precision", "device_type", "scaler"):
        state.pop(key, None)
    philox = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    state.update(version=1, cuda_rng=philox)
    state["batches"]["g"] = philox.clone()
    torch.save(state, path)
    return state


RESUMED = Recipe(epochs=3, batch_size=50, lr=0.05, cutout=4, mixup=0.2, seed=2)


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu_and_says_the_random_stream_differs(split, tmp_path, caplog):
    ckpt = tmp_path / "run.ckpt"
    state = write_cuda_checkpoint(split, ckpt)
    resumed = fit(SPEC, RESUMED, split, checkpoint=ckpt, resume=True)  # was: RuntimeError: Expected a CPUGeneratorImplState
    assert resumed.status == "complete" and len(resumed.history) == 3
    assert strip(resumed.history[:1]) == strip(state["history"])
    assert "written on cuda" in caplog.text and "random stream" in caplog.text and "differs" in caplog.text


def test_an_asgd_checkpoint_written_on_a_gpu_resumes_on_the_cpu(small, tmp_path, caplog):
    # On CUDA make_optimizer gives ASGD capturable=True and foreach=True, and the checkpoint keeps them in its
    # param groups; loaded as they were, the CPU's first step failed: "If capturable=True, params ... must be
    # on supported devices".
    recipe = Recipe(optimizer="asgd", lr=0.05, epochs=2, batch_size=40)
    spec = ArchSpec(blocks=[1], channels=[8], image_size=16)
    ckpt = tmp_path / "run.ckpt"
    killed_after(1, spec, recipe, small, ckpt)
    state = torch.load(ckpt, weights_only=True)
    philox = torch.tensor([7] + [0] * 15, dtype=torch.uint8)
    state.update(device_type="cuda", cuda_rng=philox)
    state["batches"]["g"] = philox.clone()
    for group in state["optimizer"]["param_groups"]:
        group.update(capturable=True, foreach=True)
    torch.save(state, ckpt)
    resumed = fit(spec, recipe, small, checkpoint=ckpt, resume=True)
    assert resumed.status == "complete" and len(resumed.history) == 2 and "written on cuda" in caplog.text
    groups = torch.load(ckpt, weights_only=True)["optimizer"]["param_groups"]  # the last checkpoint, written here
    assert all(g["capturable"] is False and g["foreach"] is None for g in groups)


@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)  # fit set it process-wide


def test_deterministic_mode_is_on_during_the_run_and_a_resumed_run_is_exact(split, tmp_path, restore_determinism):
    recipe = Recipe(epochs=2, batch_size=50, lr=0.05, cutmix=1.0, rotation=10, seed=4)
    modes = []

    class Killed(Exception):
        pass

    def watch(epoch, _, kill=False):
        modes.append(torch.are_deterministic_algorithms_enabled())
        if kill:
            raise Killed

    straight = fit(SPEC, recipe, split, deterministic=True, on_epoch=watch)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        fit(SPEC, recipe, split, checkpoint=ckpt, checkpoint_every=1, deterministic=True,
            on_epoch=lambda e, m: watch(e, m, kill=True))  # fmt: skip
    resumed = fit(SPEC, recipe, split, checkpoint=ckpt, resume=True, deterministic=True, on_epoch=watch)
    assert modes == [True] * 4
    assert strip(resumed.history) == strip(straight.history)
    fit(SPEC, Recipe(epochs=1, batch_size=100), split, on_epoch=lambda e, m: modes.append(
        torch.are_deterministic_algorithms_enabled()))  # fmt: skip
    assert modes[-1] is False  # the next run without it is back to the fast kernels


class Exploding:
    """Wraps build_model: the model's third forward pass raises `error`, as a GPU out of memory would."""

    def __init__(self, error):
        import nas.train

        self.error, self.build, self.calls = error, nas.train.build_model, 0

    def __call__(self, spec):
        model = self.build(spec)
        forward = model.forward

        def failing(x):
            self.calls += 1
            if self.calls == 3:
                raise self.error
            return forward(x)

        model.forward = failing
        return model


OUT_OF_MEMORY = [  # the caching allocator's own error, and what cuDNN, cuBLAS and the runtime raise
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("CUDA error: out of memory\nCompile with TORCH_USE_CUDA_DSA to enable device-side assertions."),
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["allocator", "cudnn", "cublas", "runtime"])
def test_out_of_memory_of_every_kind_ends_the_run_with_status_oom(split, monkeypatch, error):
    monkeypatch.setattr("nas.train.build_model", Exploding(error))
    result = fit(SPEC, Recipe(epochs=2, batch_size=50), split)
    assert result.status == "oom" and result.model is None
    assert result.message == str(error).splitlines()[0] and "\n" not in result.message


def test_other_device_errors_are_not_taken_for_out_of_memory(split, monkeypatch):
    monkeypatch.setattr("nas.train.build_model", Exploding(RuntimeError("CUDA error: an illegal memory access was encountered")))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        fit(SPEC, Recipe(epochs=2, batch_size=50), split)
