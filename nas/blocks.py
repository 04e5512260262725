"""The block registry, torch-free: one entry per residual block family.

An entry names the block, counts one block's parameters and MACs in closed form (`nas.count`
sums them over the network) and says which ArchSpec fields it reads. Its torch module is
registered under the same name in `nas.model.BLOCK_MODULES`; tests/test_count.py checks that both
tables name the same blocks and proves every entry's counts equal to torch's on random specs.
Adding a block is one entry here plus its module there.

A term sees the spec (for `se`, `skip_kernel`, `expansion`), the block's input and output widths
`a` and `c`, its kernel `k`, its stride (2 for the first block of every stage but the first) and
the side of its input map. Convolutions have no bias (BatchNorm follows each: 2 parameters per
channel); MACs count convolutions and linear layers only, as torch's FlopCounterMode does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BlockInfo:
    name: str
    params: Callable[[Any, int, int, int, int], int]  # (spec, a, c, k, stride) -> one block's parameters
    macs: Callable[[Any, int, int, int, int, int], int]  # (spec, a, c, k, stride, input side) -> its MACs
    about: str  # one line for --help and the README
    fields: Mapping[str, int] = field(default_factory=dict)  # ArchSpec fields only some blocks read -> default
    preact: bool = False  # normalises at the start of each block: no stem BN-ReLU, a BN-ReLU before the head
    projection_skip: bool = True  # a skip_kernel conv + BN where the shape changes (False: no skip there)


def out_side(side: int, stride: int) -> int:
    """Side of a conv's output map with padding k // 2: ceil(side / stride)."""
    return -(-side // stride)


def se_params(c: int, ratio: int) -> int:
    """Squeeze-and-excitation over c channels: two linear layers with bias, hidden max(1, c // ratio)."""
    if not ratio:
        return 0
    h = max(1, c // ratio)
    return 2 * c * h + h + c


def se_macs(c: int, ratio: int) -> int:
    return 2 * c * max(1, c // ratio) if ratio else 0


def skip_params(spec: Any, a: int, c: int, stride: int) -> int:
    return a * c * spec.skip_kernel**2 + 2 * c if stride != 1 or a != c else 0


def skip_macs(spec: Any, a: int, c: int, stride: int, side: int) -> int:
    return out_side(side, stride) ** 2 * a * c * spec.skip_kernel**2 if stride != 1 or a != c else 0


# basic: conv k (a -> c, strided), BN, ReLU, conv k (c -> c), BN, SE, + skip, ReLU.
def basic_params(spec: Any, a: int, c: int, k: int, stride: int) -> int:
    return (a + c) * c * k * k + 4 * c + se_params(c, spec.se) + skip_params(spec, a, c, stride)


def basic_macs(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    area = out_side(side, stride) ** 2
    return area * (a + c) * c * k * k + se_macs(c, spec.se) + skip_macs(spec, a, c, stride, side)


# preact: BN (over a), ReLU, conv k, BN, ReLU, conv k, SE, + skip. Same convs; the first BN sees a.
def preact_params(spec: Any, a: int, c: int, k: int, stride: int) -> int:
    return basic_params(spec, a, c, k, stride) - 2 * c + 2 * a


# bottleneck (ResNet-50, torchvision's v1.5 stride placement): narrow width m = max(1, c // expansion);
# 1x1 (a -> m), BN, ReLU, k x k (m -> m, strided), BN, ReLU, 1x1 (m -> c), BN, SE over c, + skip, ReLU.
def bottleneck_params(spec: Any, a: int, c: int, k: int, stride: int) -> int:
    m = max(1, c // spec.expansion)
    return a * m + m * m * k * k + m * c + 4 * m + 2 * c + se_params(c, spec.se) + skip_params(spec, a, c, stride)


def bottleneck_macs(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    m = max(1, c // spec.expansion)
    area = out_side(side, stride) ** 2
    return side * side * a * m + area * (m * m * k * k + m * c) + se_macs(c, spec.se) + skip_macs(spec, a, c, stride, side)


# mbconv (MobileNetV2 / MCUNet inverted residual): wide width m = a * expansion; 1x1 (a -> m), BN,
# ReLU6 (none when expansion is 1), depthwise k x k (strided), BN, ReLU6, SE over m, 1x1 (m -> c), BN;
# + the input only where the shapes match (no projection skip).
def mbconv_params(spec: Any, a: int, c: int, k: int, stride: int) -> int:
    m = a * spec.expansion
    expand = a * m + 2 * m if spec.expansion != 1 else 0
    return expand + m * k * k + 2 * m + se_params(m, spec.se) + m * c + 2 * c


def mbconv_macs(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    m = a * spec.expansion
    expand = side * side * a * m if spec.expansion != 1 else 0
    return expand + out_side(side, stride) ** 2 * (m * k * k + m * c) + se_macs(m, spec.se)


BLOCKS: dict[str, BlockInfo] = {
    b.name: b
    for b in (
        BlockInfo("basic", basic_params, basic_macs, "two k x k convs, BN after each, ReLU after the sum"),
        BlockInfo("preact", preact_params, basic_macs, "two k x k convs, each after BN-ReLU (identity mappings)",
                  preact=True),
        BlockInfo("bottleneck", bottleneck_params, bottleneck_macs,
                  "1x1 reduce to channels/expansion, k x k, 1x1 expand (ResNet-50)", fields={"expansion": 4}),
        BlockInfo("mbconv", mbconv_params, mbconv_macs,
                  "1x1 expand by expansion, depthwise k x k, 1x1 project; residual where shapes match "
                  "(MobileNetV2, MCUNet)", fields={"expansion": 6}, projection_skip=False),
    )
}  # fmt: skip
BLOCK_FIELDS = frozenset(name for b in BLOCKS.values() for name in b.fields)


def block_reads(block: str, name: str) -> bool:
    """Whether ArchSpec field `name` matters for a network of `block`s (a space samples it only then)."""
    info = BLOCKS[block]
    if name in BLOCK_FIELDS:
        return name in info.fields
    if name == "skip_kernel":
        return info.projection_skip
    return True
