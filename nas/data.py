"""Datasets as uint8 N x C x H x W tensors (decoded once, cached beside the data) and the splits the
search and the retrain train on.

Names (`--dataset`): `cifar10`, `cifar100` (torchvision's files under `--data-dir`, downloaded when
missing and the network allows), `imagefolder:PATH` (PATH/train/<class>/*, PATH/test/<class>/*),
and `synthetic[:N]` (generated, for tests and smoke runs).

The search trains on the training split minus a stratified, seeded validation split and scores on
that validation split; the official test set is for `retrain` only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from nas.decode import decode, resize
from nas.device import check_fits, cpu_cores
from nas.errors import NasError

DEFAULT_DATA_DIR = Path(os.environ.get("NAS_DATA_DIR", Path.home() / ".cache" / "nas"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CACHE_VERSION = 1


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 N x C x H x W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def shape(self) -> dict[str, int]:
        """What an ArchSpec must match: `ArchSpec(..., **dataset.shape)`."""
        return image_shape(self.train_x, self.classes)


@dataclass
class Split:
    """What `fit` trains on (`train_*`) and scores on (`val_*`), with normalisation statistics from
    the training part. For a retrain, `val_*` is the official test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1]
    std: tuple[float, ...]
    classes: list[str]
    info: dict = field(default_factory=dict)  # how it was drawn: recorded on the study

    @property
    def shape(self) -> dict[str, int]:
        return image_shape(self.train_x, self.classes)

    def device_bytes(self, batch_size: int) -> int:
        """Device memory `fit` needs for this split, beyond the model, when it trains with batches of
        `batch_size`: the uint8 images and labels, the validation images prepared for evaluation (fp32 at
        most) and the augmentation workspace (a chunk is at least one batch: large images at a large batch
        need more than the default chunk). Preparing the validation images takes less than augmenting,
        and before it (nas.augment.prepare); tests/test_data.py measures the peak against this."""
        from nas.augment import workspace_bytes

        stored = sum(t.nbytes for t in (self.train_x, self.train_y, self.val_x, self.val_y))
        workspace = workspace_bytes(tuple(self.train_x.shape[1:]), batch_size, len(self.train_x))
        return stored + 4 * self.val_x.numel() + workspace

    def describe(self) -> str:
        c, h, w = self.train_x.shape[1:]
        return f"the data ({len(self.train_x) + len(self.val_x):,} images of {c}x{h}x{w})"

    def to(self, device: torch.device | str, check_memory: bool = True, *, batch_size: int | None = None) -> Split:
        """This split on `device`; refused in one line when a GPU cannot hold it with room to train with
        batches of `batch_size` (`check_memory=False` where the caller has checked already, for all the
        jobs of a GPU)."""
        device = torch.device(device)
        if check_memory and self.train_x.device != device:
            if batch_size is None:
                raise TypeError("Split.to checks the device memory for a training: pass its batch_size.")
            check_fits(self.device_bytes(batch_size), device, self.describe())
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y),
                       val_x=move(self.val_x), val_y=move(self.val_y))  # fmt: skip


def image_shape(x: torch.Tensor, classes: list[str]) -> dict[str, int]:
    """The ArchSpec fields images `x` (N x C x H x W) with these classes fix."""
    return {"classes": len(classes), "image_size": x.shape[-1], "in_channels": x.shape[1]}


# ------------------------------------------------------------------------------------------ loading


def load_dataset(name: str, data_dir: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """Raises NasError with one clear sentence when the dataset cannot be had."""
    data_dir = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR
    if name in ("cifar10", "cifar100"):
        ds = _cifar(name, data_dir)
    elif name.startswith("imagefolder:"):
        ds = _imagefolder(Path(name.split(":", 1)[1]).expanduser(), image_size)
    elif name == "synthetic" or name.startswith("synthetic:"):
        n = name.split(":", 1)[1] if ":" in name else "1000"
        if not n.isdigit() or int(n) < 20:
            raise NasError(f"synthetic:N needs an integer N >= 20 (training images), got {n!r}.")
        ds = synthetic(int(n))
    else:
        raise NasError(f"unknown dataset {name!r}; use cifar10, cifar100, imagefolder:PATH or synthetic[:N].")
    if image_size and ds.image_size != image_size and not name.startswith("imagefolder:"):
        ds = replace(ds, train_x=_resize(ds.train_x, image_size), test_x=_resize(ds.test_x, image_size))
    return ds


def _cifar(name: str, data_dir: Path) -> Dataset:
    cache = data_dir / "nas-cache" / f"{name}.pt"
    cached = _read_cache(cache, fingerprint=name)
    if cached:
        return cached
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(data_dir), train=train, download=False)
        except RuntimeError:
            try:
                ds = cls(root=str(data_dir), train=train, download=True)
            except Exception as e:  # no network, a proxy, a full disk: say where the files go
                raise NasError(
                    f"{name} is not under {data_dir} and could not be downloaded ({type(e).__name__}: {e}). "
                    f"Put {cls.filename} (from {cls.url}) or its extracted folder {cls.base_folder}/ "
                    f"in {data_dir}, or pass --data-dir DIR where they are."
                ) from None
        parts += [torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)]
    out = Dataset(name, *parts, classes=list(ds.classes))
    _write_cache(cache, out, fingerprint=name)
    return out


def _imagefolder(root: Path, image_size: int | None) -> Dataset:
    splits = {s: root / s for s in ("train", "test")}
    for d in splits.values():
        if not d.is_dir():
            raise NasError(f"imagefolder:{root} needs {d}/<class>/<image> folders; {d} is missing.")
    classes = sorted(p.name for p in splits["train"].iterdir() if p.is_dir())
    test_classes = sorted(p.name for p in splits["test"].iterdir() if p.is_dir())
    if not classes:
        raise NasError(f"{splits['train']} has no class folders.")
    if len(classes) < 2:  # every label the same: any model scores 1.0 and the search learns nothing
        raise NasError(f"{splits['train']} has one class folder ({classes[0]}); a classifier needs two or more.")
    if test_classes != classes:
        raise NasError(f"{root}: train and test have different class folders.")
    files, stamps = {}, hashlib.sha1()
    for s, d in splits.items():
        files[s] = []
        for i, c in enumerate(classes):
            with os.scandir(d / c) as entries:
                found = sorted((e.name, e) for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
            for name, entry in found:  # name, size and mtime: an image overwritten in place changes the key
                st = entry.stat()
                stamps.update(f"{s}/{c}/{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            files[s] += [(f"{d}/{c}/{n}", i) for n, _ in found]  # strings: 60k Path objects cost 0.3 s
    fingerprint = f"{root.resolve()}|{stamps.hexdigest()}|{image_size}"
    cache = _cache_path_for(root, f"imagefolder-{image_size or 'native'}.pt", fingerprint)
    cached = _read_cache(cache, fingerprint)
    if cached:
        return cached
    for s in ("train", "test"):
        if not files[s]:
            raise NasError(f"{splits[s]} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    images = decode_images([f for s in ("train", "test") for f, _ in files[s]], image_size)  # one pool of decoders
    n, labels = len(files["train"]), {s: torch.tensor([i for _, i in files[s]]) for s in files}
    out = Dataset(f"imagefolder:{root}", images[:n], labels["train"], images[n:], labels["test"], classes=classes)
    _write_cache(cache, out, fingerprint)
    return out


def decode_images(paths: list[str], image_size: int | None) -> torch.Tensor:
    """uint8 N x 3 x H x W from image files (resized to image_size x image_size where given),
    decoded in processes, one per core (nas.decode)."""
    return torch.from_numpy(decode(paths, image_size, processes=cpu_cores()))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to size x size (bilinear, antialiased when shrinking)."""
    return torch.from_numpy(resize(x.numpy(), size))


def _cache_path_for(root: Path, filename: str, fingerprint: str) -> Path:
    """Beside the data when that folder is writable, else under the default data dir."""
    if os.access(root, os.W_OK):
        return root / ".nas-cache" / filename
    return DEFAULT_DATA_DIR / "nas-cache" / f"{hashlib.sha1(fingerprint.encode()).hexdigest()[:16]}-{filename}"


def _read_cache(path: Path, fingerprint: str) -> Dataset | None:
    try:
        d = torch.load(path, weights_only=True, mmap=True)  # pages are read when the tensors are used
    except Exception:  # missing, cut short, or holding what weights_only refuses: decode again and rewrite it
        return None
    if not isinstance(d, dict):
        return None
    if d.get("version") != CACHE_VERSION or d.get("fingerprint") != fingerprint:
        return None
    return Dataset(d["name"], d["train_x"], d["train_y"], d["test_x"], d["test_y"], d["classes"])


def _write_cache(path: Path, ds: Dataset, fingerprint: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"version": CACHE_VERSION, "fingerprint": fingerprint, "name": ds.name, "classes": ds.classes,
                    "train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x, "test_y": ds.test_y}, tmp)  # fmt: skip
        os.replace(tmp, path)  # atomic: a reader never sees half a cache
    except OSError:
        pass  # a read-only place: decode again next time


# ---------------------------------------------------------------------------------------- synthetic


def synthetic(n_train: int = 1000, classes: int = 10, size: int = 32, seed: int = 0) -> Dataset:
    """Deterministic images with a learnable class structure: each class is a smooth random colour
    layout; each image is its class's layout, shifted up to 3 px, with random contrast and noise.
    A small CNN reaches well above chance in a few CPU epochs; 100% takes more than that."""
    g = torch.Generator().manual_seed(seed)
    layouts = torch.rand(classes, 3, 4, 4, generator=g)
    layouts = torch.nn.functional.interpolate(layouts, size=size, mode="bicubic", align_corners=False)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        y = y[torch.randperm(n, generator=g)]
        x = layouts[y]
        shifts = torch.randint(-3, 4, (n, 2), generator=g)
        rows = (torch.arange(size)[None, :] - shifts[:, :1]) % size  # circular shift, one per image
        cols = (torch.arange(size)[None, :] - shifts[:, 1:]) % size
        x = x[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]  # fmt: skip
        x = (x - 0.5) * (0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)) + 0.5
        x = x + 0.25 * torch.randn(x.shape, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train, test = make(n_train), make(max(classes * 10, n_train // 5))
    return Dataset(f"synthetic:{n_train}", *train, *test, classes=[f"class{i}" for i in range(classes)])


# ------------------------------------------------------------------------------------------- splits


def validation_split(ds: Dataset, val_size: int | None = None, seed: int = 0, subset: float = 1.0) -> Split:
    """Carve a stratified, seeded validation split from the training set (default: 10%, so 5,000
    for CIFAR-10); train on the rest, or on a stratified `subset` fraction of the rest (proxies)."""
    n = len(ds.train_y)
    val_size = n // 10 if val_size is None else val_size
    if not 0 < val_size < n:
        raise NasError(f"validation size must be between 1 and {n - 1}, got {val_size}.")
    if not 0.0 < subset <= 1.0:
        raise NasError(f"proxy subset is a fraction in (0, 1], got {subset}.")
    g = torch.Generator().manual_seed(seed)
    val = _stratified(ds.train_y, val_size, g)
    rest = torch.ones(n, dtype=torch.bool)
    rest[val] = False
    train = rest.nonzero().squeeze(1)
    if subset < 1.0:
        train = train[_stratified(ds.train_y[train], max(1, round(subset * len(train))), g)]
    info = {"seed": seed, "val_size": val_size, "train_size": len(train), "subset": subset,
            "val_sha1": hashlib.sha1(val.numpy().tobytes()).hexdigest()}  # fmt: skip
    return _split(ds.train_x[train], ds.train_y[train], ds.train_x[val], ds.train_y[val], ds.classes, info)


def test_split(ds: Dataset) -> Split:
    """Train on the whole training set (train + validation), score on the official test set."""
    return _split(ds.train_x, ds.train_y, ds.test_x, ds.test_y, ds.classes, {"train_size": len(ds.train_y)})


test_split.__test__ = False  # not a pytest test, despite its name


def _split(tx, ty, vx, vy, classes, info) -> Split:
    mean, std = channel_stats(tx)
    return Split(tx, ty, vx, vy, mean, std, classes, info)


def _stratified(y: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k indices into y, sorted, with each class represented in proportion to its frequency."""
    classes, counts = torch.unique(y, return_counts=True)
    quota = (counts.double() * k / len(y)).floor().long()
    # hand the rounding remainder to the classes with the largest fractional parts
    short = k - int(quota.sum())
    if short:
        frac = counts.double() * k / len(y) - quota
        quota[torch.argsort(frac, descending=True)[:short]] += 1
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = (y == c).nonzero().squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.cat(picked).sort().values


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, exact: from a 256-bin histogram
    per channel (one pass, no float copy of the images)."""
    hist = torch.stack([torch.bincount(x[:, c].flatten(), minlength=256) for c in range(x.shape[1])]).double().cpu()
    v = torch.arange(256, dtype=torch.float64)
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    std = ((hist * v * v).sum(1) / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
