"""`nas predict`: class predictions of a retrained model for a folder of unlabeled images, as an
`ID,Label,Confidence` CSV (ID: the file's stem, Label: the class name, Confidence: the model's
probability for that class)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from nas.arch import ArchSpec
from nas.data import IMAGE_SUFFIXES, decode_images
from nas.device import memory_format, resolve_device
from nas.errors import NasError
from nas.files import replaced
from nas.model import build_model


def load_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model `nas retrain` saved, on `device`, and the rest of what it saved."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise NasError(f"no model at {path}.") from None
    except Exception as e:
        raise NasError(f"cannot read model {path}: {e}") from None
    model = build_model(ArchSpec.from_dict(saved["spec"])).to(device, memory_format=memory_format(device))
    model.load_state_dict(saved["model"])
    return model.eval(), saved


def predict_folder(model_path: Path, images: Path, out: Path, *, tta: bool = False,
                   device: str | None = None) -> tuple[int, list[Path]]:  # fmt: skip
    """Write `out` with one row per image under `images` (recursively); returns the row count and the
    files skipped as not images (by their suffix)."""
    from nas.train import predict

    dev = resolve_device(device)
    model, saved = load_model(model_path, dev)
    if not images.is_dir():
        raise NasError(f"{images} is not a folder of images.")
    found = sorted(p for p in images.rglob("*") if p.is_file() and not p.name.startswith("."))
    files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
    if not files:
        raise NasError(f"{images} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise NasError(f"two images are named {twice!r}: the CSV's ID (the file stem) would be ambiguous.")
    size = saved["spec"]["image_size"]
    classes = saved["classes"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced(out) as tmp, open(tmp, "w", newline="") as f:  # a failure leaves an earlier CSV as it was
        writer = csv.writer(f)
        writer.writerow(["ID", "Label", "Confidence"])
        for i in range(0, len(files), 4096):  # decode in chunks: a big folder need not fit in memory at once
            chunk = files[i : i + 4096]
            x = decode_images([str(p) for p in chunk], image_size=size)
            confidence, labels = predict(model, x, saved["mean"], saved["std"], tta=tta).max(1)
            writer.writerows((p.stem, classes[c], f"{q:.4f}") for p, c, q in zip(chunk, labels.tolist(), confidence.tolist()))
    return len(files), skipped
