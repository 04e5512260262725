"""The architecture vocabulary: `ArchSpec`, a frozen, validated description of a ResNet.

CLI flags, search-space YAML, Optuna trial params, presets and checkpoints all speak these field
names. Nothing here imports torch, so the closed-form counter (`nas.count`) and the space sampler
stay fast; `nas.model.build_model` turns a spec into a module.

The network: stem conv (F0 x F0, stride 1) -> N stages of B_i residual blocks (stage 0 stride 1,
every later stage starts with stride 2) -> pool (global, or P x P average with stride P) -> linear.
The block families are registered in `nas.blocks`; a field only some blocks read (`expansion`)
is None for the others and left out of `to_dict`, so the dicts of older specs are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.blocks import BLOCK_FIELDS, BLOCKS
from nas.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    stem_channels: int | None = None  # None: channels[0]
    stem_kernel: int = 3
    kernel: int | tuple[int, ...] = 3  # one for every stage, or one per stage
    skip_kernel: int = 1
    block: str = "basic"  # a name registered in nas.blocks
    expansion: int | None = None  # bottleneck: channels / narrow width; mbconv: wide width / input width
    se: int = 0  # squeeze-and-excitation reduction ratio; 0 = off
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate of the last block, linear from 0 over depth
    pool: str | int = "global"
    classes: int = 10
    image_size: int = 32
    in_channels: int = 3

    def __post_init__(self) -> None:
        # Normalise first (lists -> tuples, defaults resolved) so equal specs compare equal.
        blocks = _int_tuple("blocks", self.blocks)
        channels = _int_tuple("channels", self.channels)
        n = len(blocks)
        if n == 0:
            raise ConfigError("blocks must list at least one stage.")
        if len(channels) != n:
            raise ConfigError(f"blocks has {n} stages but channels has {len(channels)}; give one per stage.")
        kernel = self.kernel
        kernel = (kernel,) * n if isinstance(kernel, int) and not isinstance(kernel, bool) else _int_tuple("kernel", kernel)
        if len(kernel) != n:
            raise ConfigError(f"kernel lists {len(kernel)} sizes for {n} stages; give one size or one per stage.")
        stem_channels = channels[0] if self.stem_channels is None else _int("stem_channels", self.stem_channels)
        pool = self.pool
        if isinstance(pool, str) and pool.isdigit():
            pool = int(pool)
        set_ = object.__setattr__
        set_(self, "blocks", blocks)
        set_(self, "channels", channels)
        set_(self, "kernel", kernel)
        set_(self, "stem_channels", stem_channels)
        set_(self, "pool", pool)
        for name in ("stem_kernel", "skip_kernel", "se", "classes", "image_size", "in_channels"):
            set_(self, name, _int(name, getattr(self, name)))
        for name in ("dropout", "drop_path"):
            set_(self, name, _float(name, getattr(self, name)))
        if self.block not in BLOCKS:
            raise ConfigError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}.")
        used = BLOCKS[self.block].fields
        for name in BLOCK_FIELDS:  # a block's own fields take its default; other blocks' fields stay None
            v = getattr(self, name)
            if name in used:
                set_(self, name, used[name] if v is None else _int(name, v))
            elif v is not None:
                users = " and ".join(b.name for b in BLOCKS.values() if name in b.fields)
                raise ConfigError(f"{name} applies to {users} blocks, not to {self.block}.")
        self._validate()

    def _validate(self) -> None:
        if any(b < 1 for b in self.blocks):
            raise ConfigError(f"every stage needs at least one block, got blocks {list(self.blocks)}.")
        if any(c < 1 for c in self.channels) or self.stem_channels < 1:
            raise ConfigError("channel counts must be positive.")
        for name, k in [("stem_kernel", self.stem_kernel), ("skip_kernel", self.skip_kernel)] + [
            ("kernel", k) for k in self.kernel
        ]:
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"{name} must be a positive odd number (padding k//2 keeps the map size), got {k}.")
        for name in BLOCKS[self.block].fields:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not BLOCKS[self.block].projection_skip and self.skip_kernel != 1:
            raise ConfigError(f"{self.block} blocks have no projection skip; leave skip_kernel at 1, "
                              f"got {self.skip_kernel}.")  # fmt: skip
        if self.se < 0:
            raise ConfigError(f"se is a reduction ratio (0 = off) and cannot be negative, got {self.se}.")
        for name in ("dropout", "drop_path"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {p}.")
        if self.classes < 1 or self.in_channels < 1:
            raise ConfigError("classes and in_channels must be positive.")
        if self.image_size < 2 ** (len(self.blocks) - 1) or self.image_size < 1:
            raise ConfigError(
                f"a {self.image_size}px image is too small for {len(self.blocks)} stages "
                f"(each stage after the first halves the map; needs at least {2 ** (len(self.blocks) - 1)}px)."
            )
        if self.pool != "global":
            if not isinstance(self.pool, int) or isinstance(self.pool, bool) or self.pool < 1:
                raise ConfigError(f"pool must be 'global' or a positive integer P, got {self.pool!r}.")
            if self.final_size % self.pool:
                raise ConfigError(
                    f"pool {self.pool} does not divide the final {self.final_size}x{self.final_size} feature map."
                )

    @property
    def stages(self) -> int:
        return len(self.blocks)

    @property
    def final_size(self) -> int:
        """Side of the last stage's feature map: each stride-2 stage maps S to ceil(S / 2)."""
        s = self.image_size
        for _ in range(len(self.blocks) - 1):
            s = (s + 1) // 2
        return s

    @property
    def head_features(self) -> int:
        if self.pool == "global":
            return self.channels[-1]
        return self.channels[-1] * (self.final_size // self.pool) ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"], d["channels"] = list(self.blocks), list(self.channels)
        k = self.kernel
        d["kernel"] = k[0] if len(set(k)) == 1 else list(k)
        for name in BLOCK_FIELDS - set(BLOCKS[self.block].fields):
            del d[name]  # None: this block does not read it
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        unknown = sorted(set(d) - ARCH_FIELDS)
        if unknown:
            raise ConfigError(f"unknown architecture key {unknown[0]!r}; known keys: {', '.join(sorted(ARCH_FIELDS))}.")
        missing = [k for k in ("blocks", "channels") if k not in d]
        if missing:
            raise ConfigError(f"an architecture needs {' and '.join(missing)}.")
        return cls(**d)

    def describe(self) -> str:
        """One line for people: 'basic 3-5-3 x 64-128-256, stem 64 k3, k3, skip k1, pool global'."""
        info = BLOCKS[self.block]
        ks = "-".join(map(str, self.kernel)) if len(set(self.kernel)) > 1 else str(self.kernel[0])
        own = "".join(f", {name} {getattr(self, name)}" for name in info.fields)
        skip = f", skip k{self.skip_kernel}" if info.projection_skip else ""
        extra = "".join(
            f", {name} {getattr(self, name):.3g}" for name in ("se", "dropout", "drop_path") if getattr(self, name)
        )
        return (
            f"{self.block} {'-'.join(map(str, self.blocks))} x {'-'.join(map(str, self.channels))}, "
            f"stem {self.stem_channels} k{self.stem_kernel}, k{ks}{own}{skip}, pool {self.pool}{extra}"
        )


ARCH_FIELDS = frozenset(f.name for f in fields(ArchSpec))


WIDTH_MULTIPLE = 8  # tensor-core friendly channel counts; a space's `width_multiple` may say otherwise


def round_width(x: float, multiple: int = WIDTH_MULTIPLE) -> int:
    """A width rounded to a multiple of `multiple` (at least `multiple`). GPUs like 8; on a
    microcontroller, where only the count matters, 1 lets a small budget be filled closely."""
    return max(multiple, int(x / multiple + 0.5) * multiple)  # half up: 36 -> 40, not Python's banker's 32


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ConfigError(f"{name} must be an integer, got {v!r}.")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name} must be a number, got {v!r}.")
    return float(v)


def _int_tuple(name: str, v: Any) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise ConfigError(f"{name} must be a list of integers, got {v!r}.")
    return tuple(_int(name, x) for x in v)
