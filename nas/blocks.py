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

A peak term is the most activation elements alive at once while one block runs on one image, its
input and output included, under the schedule `nas.count.count_peak_memory` states: ops one at a
time in the order the module computes them, each op's inputs and output alive while it runs, a
tensor freed after its last use (the block's input held for the residual until the skip reads it),
BatchNorm folded into the conv before it, activations fused into the op before them. A
pre-activation block's opening BN-ReLU follows the previous block's sum, not a conv: an op between
blocks (`nas.count` says why it is never the peak), so the preact term is basic's, from its output.
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
    peak: Callable[[Any, int, int, int, int, int], int]  # (spec, a, c, k, stride, input side) -> peak elements
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


def se_peak(held: int, x: int, c: int, ratio: int) -> int:
    """Peak of squeeze-and-excitation over a map of x elements and c channels while `held` elements
    wait: its multiply holds the map, the c-channel gate and the product; the squeezed and hidden
    vectors before it are no larger than the map. 0 when SE is off."""
    return held + 2 * x + c if ratio else 0


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


def basic_peak(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    # conv1 with x held for the skip; conv2; the skip conv (x, conv2's map, its own); SE; the add.
    # Without a projection the skip is x itself, which then has the output's size.
    x, y = a * side * side, c * out_side(side, stride) ** 2
    return max(x + y, x + 2 * y, se_peak(y, y, c, spec.se), 3 * y)


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


def bottleneck_peak(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    # Each conv with x held: 1x1 reduce, k x k (its input at side, output at the strided side), 1x1
    # expand; then the skip conv, SE and the add as basic.
    m, s = max(1, c // spec.expansion), out_side(side, stride)
    x, y, wide, narrow = a * side * side, c * s * s, m * side * side, m * s * s
    return max(x + wide, x + wide + narrow, x + narrow + y, x + 2 * y, se_peak(y, y, c, spec.se), 3 * y)


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


def mbconv_peak(spec: Any, a: int, c: int, k: int, stride: int, side: int) -> int:
    # x is held only where it is added back. Expand (x and the wide map); depthwise (its input:
    # the wide map, or x itself at expansion 1; its strided output); SE over the wide map; project.
    m, s = a * spec.expansion, out_side(side, stride)
    x, y, narrow = a * side * side, c * s * s, m * s * s
    residual, expands = stride == 1 and a == c, spec.expansion != 1
    held = x if residual else 0
    depthwise = (held + m * side * side if expands else x) + narrow
    return max(x + m * side * side if expands else 0, depthwise, se_peak(held, narrow, m, spec.se),
               held + narrow + y, 3 * y if residual else 0)  # fmt: skip


BLOCKS: dict[str, BlockInfo] = {
    b.name: b
    for b in (
        BlockInfo("basic", basic_params, basic_macs, basic_peak, "two k x k convs, BN after each, ReLU after the sum"),
        BlockInfo("preact", preact_params, basic_macs, basic_peak, "two k x k convs, each after BN-ReLU (identity mappings)",
                  preact=True),
        BlockInfo("bottleneck", bottleneck_params, bottleneck_macs, bottleneck_peak,
                  "1x1 reduce to channels/expansion, k x k, 1x1 expand (ResNet-50)", fields={"expansion": 4}),
        BlockInfo("mbconv", mbconv_params, mbconv_macs, mbconv_peak,
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
