"""Per-device choices (nas.device) and that training, evaluation and prediction all follow them."""

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas.arch import ArchSpec
from nas.data import synthetic, validation_split
from nas.device import (
    check_fits,
    choose_precision,
    configure,
    cpu_bf16,
    is_out_of_memory,
    memory_format,
    release_memory,
    resolve_device,
    threads_per_worker,
    use_expandable_segments,
)
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


def test_prediction_uploads_the_normalisation_constants_once_and_copies_to_the_host_once(monkeypatch, op_log):
    model = build_model(ArchSpec(blocks=[1], channels=[8], image_size=8)).eval()
    images = torch.randint(0, 256, (2500, 3, 8, 8), dtype=torch.uint8)  # three batches of up to 1024
    to_host = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: to_host.append(self.shape) or cpu(self, *a, **k))
    with op_log() as log:
        probs = predict(model, images, (0.5,) * 3, (0.2,) * 3, precision="fp32")
    assert probs.shape == (2500, 10) and torch.allclose(probs.sum(1), torch.ones(2500))
    assert log.ops.count("lift_fresh") == 2  # mean and std, built from Python numbers once, not per batch
    assert to_host == [(2500, 10)]


def test_the_precision_flag_says_what_auto_picks_on_a_cpu(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    words = " ".join(capsys.readouterr().out.split())
    assert "on the CPU bf16 where it is native (AVX512-BF16, AMX), else fp32" in words


def test_a_model_built_for_prediction_takes_the_device_layout(tmp_path):
    from nas.predict import load_model

    model = build_model(SPEC)
    torch.save({"model": model.state_dict(), "spec": SPEC.to_dict()}, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path / "model.pt", torch.device("cpu"))
    conv = next(m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()


# ------------------------------------------------------------------------------------- precision


@pytest.fixture
def gpu(monkeypatch):
    """A visible GPU whose compute capability the test sets: gpu((7, 5)) is a T4."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Test GPU")

    def with_capability(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
        return resolve_device("cuda")

    return with_capability


@pytest.mark.parametrize(
    "capability,auto",
    [((9, 0), "bf16"), ((8, 9), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 0), "fp16")],
    ids=["H100", "L4", "A100", "T4", "V100", "P100"],
)
def test_auto_precision_follows_the_gpus_compute_capability(gpu, capability, auto):
    device = gpu(capability)
    assert choose_precision("auto", device) == auto
    assert choose_precision("fp32", device) == "fp32" and choose_precision("fp16", device) == "fp16"
    if auto == "fp16":
        with pytest.raises(ValueError, match=r"Test GPU \(compute capability .*\) has no native bf16; use --precision fp16"):
            choose_precision("bf16", device)
    else:
        assert choose_precision("bf16", device) == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_runs_bf16_where_native_else_fp32_unless_asked_otherwise(monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cpu = torch.device("cpu")
    assert cpu_bf16() is native
    assert choose_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert [choose_precision(p, cpu) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        choose_precision("fp8", cpu)


@pytest.fixture
def backend_flags():
    """configure() sets process-wide flags: put them back."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
    torch.use_deterministic_algorithms(False)


def tf32_getters() -> dict:
    """Every way torch lets code read the TF32 settings; each raises where the APIs were mixed."""
    return {"matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul precision": torch.get_float32_matmul_precision(),
            "matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
            "conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision}  # fmt: skip


def test_fp32_on_a_gpu_means_no_tf32_and_autocast_runs_may_use_it(gpu, backend_flags):
    # Setting the fp32_precision properties made the older getters raise: allow_tf32 and
    # get_float32_matmul_precision after bf16 or fp16, cudnn.allow_tf32 after fp32.
    device = gpu((9, 0))
    for _ in range(2):  # fp32 after autocast and the reverse, in one process
        configure(device, "fp32")
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        assert tf32_getters() == {"matmul.allow_tf32": False, "cudnn.allow_tf32": False, "matmul precision": "highest",
                                  "matmul.fp32_precision": "ieee", "conv.fp32_precision": "none"}  # fmt: skip
        configure(device, "bf16")
        assert tf32_getters() == {"matmul.allow_tf32": True, "cudnn.allow_tf32": True, "matmul precision": "high",
                                  "matmul.fp32_precision": "tf32", "conv.fp32_precision": "tf32"}  # fmt: skip


def test_deterministic_mode_turns_off_autotuning_and_fixes_the_cublas_workspace(gpu, backend_flags, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure(gpu((9, 0)), "bf16", deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    configure(gpu((9, 0)), "bf16")
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


# ---------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("jobs,free_gib,fits", [(1, 8, True), (2, 8, True), (2, 5, False), (1, 2, False)])
def test_data_that_a_gpu_cannot_hold_is_refused_in_one_line(gpu, monkeypatch, jobs, free_gib, fits):
    monkeypatch.setattr("nas.device.free_bytes", lambda device: free_gib * 2**30)
    need = 2 * 2**30
    if fits:
        check_fits(need, gpu((8, 0)), "the data", jobs=jobs)
        return
    with pytest.raises(ValueError) as e:
        check_fits(need, gpu((8, 0)), "the data", jobs=jobs)
    text = str(e.value)
    assert "\n" not in text and "the data needs 2.00 GiB of GPU memory" in text and f"{free_gib}.00 GiB free" in text
    assert ("fewer --jobs-per-gpu" in text) == (jobs > 1)
    check_fits(10**15, torch.device("cpu"), "the data")  # host memory is not checked: the images are there


def test_a_split_knows_what_it_needs_on_a_device_and_refuses_to_move_where_it_cannot_fit(gpu, monkeypatch):
    from nas.augment import CHUNK_BYTES, WORKSPACE_CHUNKS

    pixels = 3 * 32 * 32
    small = validation_split(synthetic(100), val_size=20)  # augmented in one chunk of its 80 images
    assert small.device_bytes(16) == 100 * pixels + 8 * 100 + 4 * 20 * pixels + WORKSPACE_CHUNKS * 4 * 80 * pixels
    split = validation_split(synthetic(20_000), val_size=2000)  # in chunks of 8,192 images (96 MiB of floats)
    assert split.device_bytes(512) == 20_000 * pixels + 8 * 20_000 + 4 * 2000 * pixels + WORKSPACE_CHUNKS * CHUNK_BYTES
    monkeypatch.setattr("nas.device.free_bytes", lambda device: 2**28)
    with pytest.raises(ValueError, match=r"the data \(20,000 images of 3x32x32\) needs 562 MiB of GPU memory; cuda:0 has 256 MiB free"):
        split.to(gpu((8, 0)), batch_size=512)
    with pytest.raises(TypeError, match="pass its batch_size"):  # a check with no batch size would guess low
        split.to(gpu((8, 0)))
    assert split.to("cpu").train_x is split.train_x  # already there: nothing checked, nothing copied


def test_large_images_at_a_large_batch_need_a_chunk_of_a_whole_batch():
    from nas.augment import CHUNK_BYTES, WORKSPACE_CHUNKS
    from nas.data import Split

    image = 3 * 224 * 224
    x = torch.empty(1000, 3, 224, 224, dtype=torch.uint8)  # never read: only its shape counts
    split = Split(x, torch.zeros(1000, dtype=torch.long), x[:100], torch.zeros(100, dtype=torch.long), (0.5,) * 3,
                  (0.2,) * 3, [str(i) for i in range(10)])  # fmt: skip
    base = 1100 * image + 8 * 1100 + 4 * 100 * image
    assert split.device_bytes(64) == base + WORKSPACE_CHUNKS * 4 * image * (CHUNK_BYTES // (4 * image * 64)) * 64
    assert split.device_bytes(512) == base + WORKSPACE_CHUNKS * 4 * image * 512  # one batch is 294 MiB of floats
    assert split.device_bytes(512) - split.device_bytes(1) > 0.75 * 2**30  # what the check with batch 1 missed


def test_out_of_memory_is_recognised_however_the_library_reports_it():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a device error


def test_memory_is_released_after_a_collection(monkeypatch):
    calls = []
    monkeypatch.setattr("gc.collect", lambda *a: calls.append("gc.collect"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    release_memory("cpu")
    assert calls == []
    release_memory("cuda:0")
    assert calls == ["gc.collect", "empty_cache"]  # a cycle may pin a finished run's tensors until collected


def test_search_workers_use_expandable_segments_unless_the_user_configured_the_allocator(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    use_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"


# ------------------------------------------------------------------------------------------- CPU


@pytest.mark.parametrize("cores,workers,threads", [(16, 4, 4), (16, 3, 5), (2, 2, 1), (2, 4, 1), (8, 1, 8)])
def test_workers_share_the_cores(monkeypatch, cores, workers, threads):
    monkeypatch.setattr("nas.device.cpu_cores", lambda: cores)
    assert threads_per_worker(workers) == threads
# ------------------------------------------------------------------------------------- CPU threads


class FakeClock:
    """Steps cost what `cost` says for the current thread count; the clock advances only in steps."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.cost[torch.get_num_threads()]


def run_steps(threads, clock, n):
    seen = []
    for _ in threads.pace(range(n)):
        seen.append(torch.get_num_threads())
        clock.step()
    return seen


def test_the_probe_tries_one_two_four_threads_and_keeps_the_fastest():
    from nas.device import PROBE_STEPS, CpuThreads

    per = PROBE_STEPS + 1
    clock = FakeClock({1: 2.0, 2: 1.0, 4: 3.0})  # two threads fastest: a loaded 4-core machine
    threads = CpuThreads(4, clock=clock)
    seen = run_steps(threads, clock, per + 2)  # the probe spans epochs: it goes on in the next one
    seen += run_steps(threads, clock, per + 5)
    # four threads take over twice the best median: dropped after their first timed step
    assert seen == [1] * per + [2] * per + [4] * 2 + [2] * 5
    assert threads.count == 2
    threads.restore()
    assert torch.get_num_threads() == 4


def test_a_pinned_count_is_never_probed(monkeypatch):
    from nas.device import CpuThreads

    clock = FakeClock({2: 1.0, 1: 0.5})
    assert run_steps(CpuThreads(2, chosen=2, clock=clock), clock, 12) == [2] * 12
    assert run_steps(CpuThreads(1, clock=clock), clock, 3) == [1] * 3  # one candidate: nothing to choose
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user chose
    assert CpuThreads.for_run().queue == []
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert CpuThreads.for_run().queue == [1, 2] and CpuThreads.for_run(pinned=1).count == 1


def test_fit_records_the_probed_count_keeps_it_on_resume_and_gives_the_process_its_threads_back(monkeypatch, tmp_path):
    from nas import device

    monkeypatch.delenv("OMP_NUM_THREADS")
    clock, seen = FakeClock({2: 1.0, 1: 0.25}), []  # one thread faster, as on a loaded machine
    init, pace = device.CpuThreads.__init__, device.CpuThreads.pace

    def fake_init(self, most, chosen=None, clock_=None):
        init(self, most, chosen, clock=clock)

    def watched_pace(self, batches):  # each training step advances the fake clock by its cost
        for item in pace(self, batches):
            seen.append(torch.get_num_threads())
            yield item
            clock.step()

    monkeypatch.setattr(device.CpuThreads, "__init__", fake_init)
    monkeypatch.setattr(device.CpuThreads, "pace", watched_pace)
    split = validation_split(synthetic(200), val_size=20)
    recipe = Recipe(epochs=3, batch_size=20)  # 9 steps an epoch: the probe (8 steps) ends in epoch 1

    class Killed(Exception):
        pass

    def kill_after_1(epoch, _):
        if epoch == 1:
            raise Killed

    torch.set_num_threads(2)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Killed):
        fit(SPEC, recipe, split, device="cpu", checkpoint=ckpt, checkpoint_every=1, on_epoch=kill_after_1)
    assert seen == [1] * 4 + [2] * 2 + [1] * 3  # two threads (4x slower) dropped after one timed step
    assert torch.get_num_threads() == 2  # given back, even when the run ends by an exception
    seen.clear()
    resumed = fit(SPEC, recipe, split, device="cpu", checkpoint=ckpt, checkpoint_every=1, resume=True)
    assert seen == [1] * 18  # no second probe: the count the first part recorded
    assert [r["threads"] for r in resumed.history] == [1, 1, 1]
    assert torch.get_num_threads() == 2
