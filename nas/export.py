"""`nas export`: a retrained network to ONNX, and with `--int8` to int8, checked against torch.

What `model.onnx` is: the network with every BatchNorm that follows a conv folded into it (torch's
fx fuse pass; a pre-activation network keeps the BNs that follow a residual sum, which no conv
precedes, as BatchNormalization ops), eval mode, written by torch's TorchScript-based exporter
(opset 17; it needs no onnxscript). The input normalisation is inside the graph: feed uint8 images,
N x C x H x W, pixel values 0-255 as decoded (RGB), any batch size; the output is the logits,
N x classes. Before anything is written, onnxruntime runs it on every test image and must give
torch's logits within LOGIT_TOLERANCE and the same top-1 accuracy; otherwise the export is refused.

`--int8` adds onnxruntime's post-training static quantization (QDQ format; weights int8 per
channel, activations uint8 per tensor, min-max ranges) calibrated on CALIBRATION_IMAGES training
images (never test images), and reports its test accuracy, the drop against float and the sizes.

The results go on the study as a retrain's do: system attr `nas:export:<name>` for nas, one line
in user attr `export:<name>` for the dashboard. Every file is written under a temporary name and
renamed once all checks passed.

Also here: `graph_peak_memory`, the measured peak activation memory that the closed form
(`nas.count.count_peak_memory`) is proven against.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec
from nas.count import count_peak_memory
from nas.errors import NasError
from nas.study import set_study_system_attr

EXPORT_PREFIX = "export:"  # + trial-42 / preset-resnet8, as a retrain's results
OPSET = 17
LOGIT_TOLERANCE = 1e-3  # onnxruntime's logits within this times the largest |logit| (at least 1) of torch's
CALIBRATION_IMAGES = 500
BATCH = 256

# Ops that hold no tensor of their own under count_peak_memory's schedule: no-ops at inference,
# views, and activations (fused into the op before them, which they then must be the only reader of).
NO_OPS = (nn.Dropout, nn.Identity)
VIEWS = (torch.flatten, operator.getitem, "view", "reshape", "flatten", "unsqueeze")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, F.relu, F.relu6, torch.relu, torch.sigmoid, "relu", "sigmoid")


def graph_peak_memory(model: nn.Module, spec: ArchSpec, dtype_bytes: int = 1) -> int:
    """The peak activation bytes of one image's inference, measured: `model` traced with torch.fx,
    BatchNorm folded into its convs (torch's own fuse pass), each node's tensor shape propagated
    from an input of the spec's shape, then a liveness walk in graph order: a tensor lives from the
    node that makes it to its last reader (through the views and activations that alias it)."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.passes.shape_prop import ShapeProp

    graph = fuse(model.eval()).to("meta")  # a deep copy; on the meta device shapes propagate without arithmetic
    ShapeProp(graph).propagate(torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size, device="meta"))
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    buffer: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> the node whose tensor it is
    for n in nodes:
        if n.op == "output":
            continue
        kind = type(modules[n.target]) if n.op == "call_module" else n.target
        source = n.args[0] if n.args and isinstance(n.args[0], torch.fx.Node) else None
        aliases = kind in NO_OPS or kind in VIEWS or (kind in ACTIVATIONS and len(source.users) == 1)
        buffer[n] = buffer[source] if aliases else n
    last = {b: index[b] for b in set(buffer.values())}
    for n in nodes:
        for arg in n.all_input_nodes:
            last[buffer[arg]] = max(last[buffer[arg]], index[n])
    size = {b: b.meta["tensor_meta"].shape.numel() for b in last}
    return dtype_bytes * max(sum(size[b] for b in last if index[b] <= i <= last[b]) for i in range(len(nodes)))


# ------------------------------------------------------------------------------------------ export


class Deployable(nn.Module):
    """uint8 images in, logits out: the normalisation `fit` applies, then the network with its
    BatchNorms folded into the convs before them."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        from torch.fx.experimental.optimization import fuse

        super().__init__()
        self.net = fuse(model.eval())
        # (x / 255 - mean) / std as one multiply-add, per channel
        self.register_buffer("scale", 1 / (255 * torch.tensor(std)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1))
        self.eval()  # for inference only: dropout off, as in the exported graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() * self.scale + self.shift)


def onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise NasError("nas export needs onnx and onnxruntime: pip install -e '.[export]'.") from None
    return onnx, onnxruntime


def write_onnx(module: Deployable, spec: ArchSpec, path: Path) -> None:
    x = torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size, dtype=torch.uint8)
    with warnings.catch_warnings():  # the TorchScript exporter says it is the legacy one: chosen, see above
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["image"], output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)  # fmt: skip


def session(path: Path):
    _, ort = onnx_modules()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same share of the cores as torch's
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    s = session(path)
    return np.concatenate([s.run(None, {"image": images[i : i + BATCH].numpy()})[0] for i in range(0, len(images), BATCH)])


@torch.no_grad()
def torch_logits(module: nn.Module, images: torch.Tensor) -> np.ndarray:
    return torch.cat([module(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]).numpy()


def accuracy(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.numpy()).mean())


def calibration_images(train_x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n training images drawn at random (seeded): what int8 ranges are measured on."""
    g = torch.Generator().manual_seed(seed)
    return train_x[torch.randperm(len(train_x), generator=g)[: min(n, len(train_x))]]


def quantize(float_path: Path, int8_path: Path, images: torch.Tensor) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images[i : i + 64].numpy() for i in range(0, len(images), 64))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process, and that a BN's 1-D weight has no channel axis
    try:
        quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
    finally:
        root.setLevel(level)


def check_float(name: str, module: Deployable, path: Path, data: Any) -> dict[str, Any]:
    """onnxruntime's logits and top-1 on every test image against torch's (fp32), or a refusal."""
    reference, got = torch_logits(module, data.test_x), onnx_logits(path, data.test_x)
    diff, tolerance = float(np.abs(got - reference).max()), LOGIT_TOLERANCE * max(1.0, float(np.abs(reference).max()))
    r = {"checked_images": len(data.test_y), "max_logit_diff": diff, "logit_tolerance": tolerance,
         "test_acc_torch": accuracy(reference, data.test_y), "test_acc_onnx": accuracy(got, data.test_y),
         "top1_disagreements": int((got.argmax(1) != reference.argmax(1)).sum())}  # fmt: skip
    if diff > tolerance or r["test_acc_onnx"] != r["test_acc_torch"]:
        raise NasError(f"{name}: onnxruntime disagrees with torch (largest logit difference {diff:.3g}, tolerance "
                       f"{tolerance:.3g}; test accuracy {r['test_acc_onnx']:.4f} vs {r['test_acc_torch']:.4f}); "
                       f"nothing written.")  # fmt: skip
    return r


def export(study: optuna.Study, name: str, model_path: Path, data: Any, out: Path, *, int8: bool = False,
           calibration: int = CALIBRATION_IMAGES, log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Write `out`/model.onnx (and model.int8.onnx) of the model `nas retrain` saved at `model_path`,
    checked on `data`'s test images, and store the results on the study under `name`."""
    from nas.predict import load_model

    onnx, _ = onnx_modules()
    if calibration < 1:
        raise NasError("--calibration must be at least 1 image.")
    model, saved = load_model(model_path, torch.device("cpu"))
    spec = ArchSpec.from_dict(saved["spec"])
    if data.shape != {"classes": spec.classes, "image_size": spec.image_size, "in_channels": spec.in_channels} \
            or list(saved["classes"]) != list(data.classes):  # fmt: skip
        raise NasError(f"{model_path} was trained on {len(saved['classes'])} classes of {spec.image_size}px images, "
                       f"not on {data.name} ({data.shape}); pass the --dataset it was retrained on.")  # fmt: skip
    t0 = time.perf_counter()
    module = Deployable(model.float(), saved["mean"], saved["std"])
    out.mkdir(parents=True, exist_ok=True)
    files = {"onnx": out / "model.onnx", "int8_onnx": out / "model.int8.onnx", "json": out / "export.json"}
    partial = {k: p.with_name(p.name + f".partial-{os.getpid()}") for k, p in files.items()}
    try:
        write_onnx(module, spec, partial["onnx"])
        log(f"{name}: checking model.onnx against torch on {len(data.test_y):,} test images")
        result: dict[str, Any] = {
            "onnx": str(files["onnx"]), "onnx_bytes": partial["onnx"].stat().st_size, "opset": OPSET,
            "input": f"uint8 N x {spec.in_channels} x {spec.image_size} x {spec.image_size}, 0-255; normalised inside",
            "batchnorm_left": sum(n.op_type == "BatchNormalization" for n in onnx.load(str(partial["onnx"])).graph.node),
            **check_float(name, module, partial["onnx"], data),
            "peak_ram_int8": count_peak_memory(spec), "peak_ram_measured_int8": graph_peak_memory(model, spec),
            "dataset": data.name, "model": str(model_path),
        }  # fmt: skip
        if int8:
            images = calibration_images(data.train_x, calibration)
            log(f"{name}: quantizing to int8, calibrated on {len(images)} training images")
            quantize(partial["onnx"], partial["int8_onnx"], images)
            acc = accuracy(onnx_logits(partial["int8_onnx"], data.test_x), data.test_y)
            result.update({"int8_onnx": str(files["int8_onnx"]), "int8_bytes": partial["int8_onnx"].stat().st_size,
                           "calibration_images": len(images), "test_acc_int8": acc,
                           "int8_drop": result["test_acc_onnx"] - acc})  # fmt: skip
        result["export_seconds"] = round(time.perf_counter() - t0, 1)
        partial["json"].write_text(json.dumps(result, indent=2))
        for key, path in partial.items():  # all checked: in place, each file whole
            if path.exists():
                path.replace(files[key])
        if not int8 and files["int8_onnx"].exists():  # an earlier export's, of the model replaced now
            files["int8_onnx"].unlink()
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    set_study_system_attr(study, f"nas:{EXPORT_PREFIX}{name}", result)
    study.set_user_attr(f"{EXPORT_PREFIX}{name}", f"{describe(result)}; {out}")  # what the dashboard lists
    return result


def describe(r: dict[str, Any]) -> str:
    """'onnx test accuracy 0.8212 (torch 0.8212), 308 KiB; int8 0.8190 (-0.22 points), 102 KiB; peak RAM 48.0 KiB int8'."""
    line = f"onnx test accuracy {r['test_acc_onnx']:.4f} (torch {r['test_acc_torch']:.4f}), {r['onnx_bytes'] / 1024:,.0f} KiB"
    if "test_acc_int8" in r:
        line += f"; int8 {r['test_acc_int8']:.4f} ({-100 * r['int8_drop']:+.2f} points), {r['int8_bytes'] / 1024:,.0f} KiB"
    return line + f"; peak RAM {r['peak_ram_int8'] / 1024:,.1f} KiB int8"
