"""The training vocabulary: `Recipe`, a frozen, validated description of how to train a model.

Search-space YAML, presets, trial params and checkpoints use these field names. Epoch-valued fields
(`epochs`, `step_every`, `restart_every`, `warmup_epochs`) are in the units people write recipes in;
`compressed(e)` rescales them so a short proxy run follows the same schedule shape.
No torch here: `nas.train` turns a Recipe into optimizers and learning rates.

Optimizers are registered in OPTIMIZERS, one `OptimInfo` each (as timm registers its optimizers):
adding one is one entry. Its class is named by import path, so this module stays torch-free;
tests/test_optimizers.py builds every entry on CPU and checks its flags against the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from nas.errors import ConfigError


@dataclass(frozen=True)
class OptimInfo:
    name: str
    cls: str  # import path of the torch.optim.Optimizer subclass
    lr: tuple[float, float]  # default search range, log-uniform (`lr: default` in a space)
    momentum: bool = False  # takes Recipe.momentum
    fused: bool = False  # on CUDA: fused=True, one kernel for the whole update
    foreach: bool = False  # on CUDA, where there is no fused kernel: foreach=True, a few kernels over all tensors
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # fixed arguments
    cuda_kwargs: Mapping[str, Any] = field(default_factory=dict)  # further arguments on CUDA only

    @property
    def fp16_syncs(self) -> bool:
        """Whether a step in fp16 makes the host wait for the GPU: GradScaler reads its overflow check back
        to decide whether to step; only a fused optimizer takes the check into its kernel instead."""
        return not self.fused


OPTIMIZERS: dict[str, OptimInfo] = {
    o.name: o
    for o in (
        OptimInfo("sgd", "torch.optim.SGD", (0.01, 0.4), momentum=True, fused=True),
        OptimInfo("sgd-nesterov", "torch.optim.SGD", (0.01, 0.4), momentum=True, fused=True, kwargs={"nesterov": True}),
        OptimInfo("adam", "torch.optim.Adam", (1e-4, 3e-3), fused=True),
        OptimInfo("adamw", "torch.optim.AdamW", (1e-4, 3e-3), fused=True),
        OptimInfo("adadelta", "torch.optim.Adadelta", (0.1, 2.0), foreach=True),
        OptimInfo("adagrad", "torch.optim.Adagrad", (1e-3, 0.1), fused=True),  # fused on CUDA since torch 2.4
        # capturable: ASGD's foreach path otherwise reads each step counter back to the host
        OptimInfo("asgd", "torch.optim.ASGD", (0.01, 0.4), foreach=True, cuda_kwargs={"capturable": True}),
        OptimInfo("rmsprop", "torch.optim.RMSprop", (1e-4, 3e-3), momentum=True, foreach=True),
    )
}  # adadelta, asgd and rmsprop have no fused kernel: in fp16 (auto on pre-Ampere GPUs) each step syncs once
SCHEDULES = ("constant", "step", "cosine", "cosine-restarts", "warmup-cosine", "onecycle")
PAD_MODES = ("reflect", "zeros")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # what each means per device: nas.device.choose_precision


# What can run: past these a value hangs a trial or fills the memory before any error shows (1e8
# cutout holes draw 1e8 masks per image), and none is near a useful setting.
AT_MOST = {"epochs": 100_000, "batch_size": 65_536, "crop_padding": 256, "cutout": 1_024, "cutout_holes": 64,
           "rotation": 180.0, "warmup_epochs": 100_000, "step_every": 100_000, "restart_every": 100_000,
           "mixup": 1_000.0, "cutmix": 1_000.0}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd, sgd-nesterov, rmsprop
    weight_decay: float = 5e-4
    decay_norm_bias: bool = True  # False: no weight decay on BatchNorm weights and biases
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    schedule: str = "cosine"
    step_every: float = 30.0  # step: multiply lr by gamma every this many epochs
    gamma: float = 0.1
    restart_every: float = 50.0  # cosine-restarts: cycle length in epochs
    restart_decay: float = 1.0  # cosine-restarts: peak lr multiplier from one cycle to the next
    warmup_epochs: float = 5.0  # warmup-cosine
    epochs: int = 200
    batch_size: int = 128
    crop_padding: int = 4  # random crop after padding by this many pixels; 0 = off
    pad_mode: str = "reflect"
    flip: bool = True
    cutout: int = 0  # side of each cutout hole in pixels; 0 = off
    cutout_holes: int = 1
    rotation: float = 0.0  # max random rotation in degrees; 0 = off
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha); 0 = off. With mixup too, each batch picks one at random.
    label_smoothing: float = 0.0
    precision: str = "auto"  # auto: bf16 on GPUs that have it natively, else fp16; on the CPU bf16 where native, else fp32
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            kind = _KINDS[f.name]
            if kind is bool:
                if not isinstance(v, bool):
                    raise ConfigError(f"recipe {f.name} must be true or false, got {v!r}.")
            elif kind is int:
                if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
                    raise ConfigError(f"recipe {f.name} must be an integer, got {v!r}.")
                object.__setattr__(self, f.name, int(v))
            elif kind is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                    raise ConfigError(f"recipe {f.name} must be a number, got {v!r}.")
                object.__setattr__(self, f.name, float(v))
            elif not isinstance(v, str):
                raise ConfigError(f"recipe {f.name} must be a string, got {v!r}.")
        for name, allowed in [
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("pad_mode", PAD_MODES),
            ("precision", PRECISIONS),
        ]:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"recipe {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        positive = ["lr", "epochs", "batch_size", "step_every", "restart_every", "cutout_holes"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"recipe {name} must be positive, got {getattr(self, name)}.")
        non_negative = ["weight_decay", "grad_clip", "warmup_epochs", "crop_padding", "cutout", "rotation", "mixup", "cutmix"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"recipe {name} cannot be negative, got {getattr(self, name)}.")
        for name, most in AT_MOST.items():
            if getattr(self, name) > most:
                raise ConfigError(f"recipe {name} can be at most {most:,}, got {getattr(self, name):,}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"recipe momentum must be in [0, 1), got {self.momentum}.")
        if self.optimizer == "sgd-nesterov" and self.momentum == 0:
            raise ConfigError("recipe sgd-nesterov needs a momentum above 0.")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 < self.restart_decay <= 1.0:
            raise ConfigError("recipe gamma and restart_decay are decay factors in (0, 1].")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"recipe label_smoothing must be in [0, 1), got {self.label_smoothing}.")

    def compressed(self, epochs: int) -> Recipe:
        """The same recipe over `epochs` epochs: every epoch-valued schedule field scales alike."""
        f = epochs / self.epochs
        return replace(
            self,
            epochs=epochs,
            step_every=self.step_every * f,
            restart_every=self.restart_every * f,
            warmup_epochs=self.warmup_epochs * f,
        )

    def describe(self) -> str:
        """One line for people: 'sgd lr 0.05, cosine, bs 128, cutout 8'."""
        parts = [f"{self.optimizer} lr {self.lr:.3g}", self.schedule, f"bs {self.batch_size}"]
        parts += [f"{k} {getattr(self, k):g}" for k in ("cutout", "mixup", "cutmix", "rotation", "label_smoothing")
                  if getattr(self, k)]  # fmt: skip
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        unknown = sorted(set(d) - RECIPE_FIELDS)
        if unknown:
            raise ConfigError(f"unknown recipe key {unknown[0]!r}; known keys: {', '.join(sorted(RECIPE_FIELDS))}.")
        return cls(**d)


RECIPE_FIELDS = frozenset(f.name for f in fields(Recipe))
_KINDS = {f.name: type(f.default) for f in fields(Recipe)}
DEFAULTS = Recipe().to_dict()


def field_used(name: str, chosen: dict[str, Any]) -> bool:
    """Whether recipe field `name` affects training given the fields chosen so far (fields come in
    declaration order, so what decides is always chosen first). A search space samples a
    conditional field only where it is used."""
    get = lambda k: chosen.get(k, DEFAULTS[k])  # noqa: E731
    if name == "momentum":
        return OPTIMIZERS[get("optimizer")].momentum
    if name in ("step_every", "gamma"):
        return get("schedule") == "step"
    if name in ("restart_every", "restart_decay"):
        return get("schedule") == "cosine-restarts"
    if name == "warmup_epochs":
        return get("schedule") == "warmup-cosine"
    if name == "cutout_holes":
        return get("cutout") > 0
    if name == "pad_mode":
        return get("crop_padding") > 0
    return True
