"""Closed-form parameter and MAC counts of an `ArchSpec`: integer arithmetic, no module built.

This is what lets a search reject an over-budget proposal before anything touches a GPU, so it must
be exact: tests/test_count.py proves both functions equal to PyTorch's own figures on random specs
of every registered block. The per-block terms live with the block registry (`nas.blocks`), which
mirrors `nas.model` term by term.
"""

from __future__ import annotations

from dataclasses import replace

from nas.arch import WIDTH_MULTIPLE, ArchSpec, round_width
from nas.blocks import BLOCKS, out_side
from nas.errors import ConfigError


def count_params(spec: ArchSpec) -> int:
    """Trainable parameters: `sum(p.numel() for p in build_model(spec).parameters())`.

    The stem conv (and its BN unless the blocks are pre-activation), every block by its registered
    closed-form term (`nas.blocks`), the final BN of a pre-activation network, and the linear head.
    A stage's blocks after the first are alike, so each stage costs two calls of the term.
    """
    info = BLOCKS[spec.block]
    a = spec.stem_channels
    total = spec.in_channels * a * spec.stem_kernel**2 + (0 if info.preact else 2 * a)
    for i, (b, c, k) in enumerate(zip(spec.blocks, spec.channels, spec.kernel)):
        total += info.params(spec, a, c, k, 2 if i else 1) + (b - 1) * info.params(spec, c, c, k, 1)
        a = c
    if info.preact:
        total += 2 * a  # final BN before the head
    return total + (spec.head_features + 1) * spec.classes


def count_macs(spec: ArchSpec) -> int:
    """Multiply-accumulates of one forward pass of one image (eval mode).

    Counted: every convolution (stem, blocks, skips) and every linear layer (SE and head): exactly
    half of `torch.utils.flop_counter.FlopCounterMode`'s figure, which counts 2 FLOPs per MAC.
    Not counted, as FlopCounterMode does not count them either: BatchNorm, activations, pooling,
    the SE gate's sigmoid and multiply, residual additions, bias additions, dropout and drop-path.
    """
    info = BLOCKS[spec.block]
    side, a = spec.image_size, spec.stem_channels
    total = side * side * a * spec.in_channels * spec.stem_kernel**2
    for i, (b, c, k) in enumerate(zip(spec.blocks, spec.channels, spec.kernel)):
        stride = 2 if i else 1
        total += info.macs(spec, a, c, k, stride, side)
        side = out_side(side, stride)
        total += (b - 1) * info.macs(spec, c, c, k, 1, side)
        a = c
    return total + spec.head_features * spec.classes


def fit_width(spec: ArchSpec, budget: int, max_macs: int | None = None, multiple: int = WIDTH_MULTIPLE) -> ArchSpec:
    """`spec` with every width (stem and stages) scaled by the largest uniform multiplier whose
    parameter count stays within `budget` (and MACs within `max_macs`, where given), each width
    rounded to a multiple of `multiple` (at least that). MACs grow with every width as parameters do.

    A bisection on the counter alone finds the boundary, as the count grows with the multiplier:
    every block term is monotone in every width. One thing is not: a projection skip exists only
    where a block's input and output widths differ, and rounding can make two widths equal at a
    larger multiplier (a stem of 16 and a first stage of 24 both round to 16 at 0.8, not at 0.7),
    so the count can dip there. Scanning random specs at multipliers 0.005-4 found such dips in
    about 1 in 300 basic or preact specs and 1 in 30 bottleneck ones (the 1x1 convs make a skip
    relatively dear), never for mbconv (no projection skip). The result is within the budget
    either way; past a dip a wider configuration may also fit and is not looked for. Kept so,
    because trials of studies searched with --fill-budget are rebuilt through this function.
    """

    def scaled(m: float) -> ArchSpec:
        return replace(
            spec,
            channels=tuple(round_width(c * m, multiple) for c in spec.channels),
            stem_channels=round_width(spec.stem_channels * m, multiple),
        )

    def fits(s: ArchSpec) -> bool:
        return count_params(s) <= budget and (max_macs is None or count_macs(s) <= max_macs)

    smallest = scaled(0.0)
    if not fits(smallest):
        raise ConfigError(
            f"even at width {multiple} everywhere this architecture has {count_params(smallest):,} parameters and "
            f"{count_macs(smallest):,} MACs, over the budget of {budget:,}"
            + (f" or the MAC limit of {max_macs:,}." if max_macs else ".")
        )
    lo, hi = 0.0, 1.0
    while fits(scaled(hi)):  # grow until over
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if fits(scaled(mid)):
            lo = mid
        else:
            hi = mid
    return scaled(lo)
