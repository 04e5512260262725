"""Closed-form parameter and MAC counts of an `ArchSpec`: integer arithmetic, no module built.

This is what lets a search reject an over-budget proposal before anything touches a GPU, so it must
be exact: tests/test_count.py proves both functions equal to PyTorch's own figures on random specs.
It mirrors `nas.model` term by term.
"""

from __future__ import annotations

from dataclasses import replace

from nas.arch import ArchSpec, round_width
from nas.errors import ConfigError


def count_params(spec: ArchSpec) -> int:
    """Trainable parameters: `sum(p.numel() for p in build_model(spec).parameters())`.

    Per block with input width a, output width c, kernel f: two convs (a*c*f^2 + c*c*f^2, no bias),
    two BatchNorms (2 parameters per channel: 2c + 2c for `basic`, 2a + 2c for `preact`), an SE
    module (two linear layers with bias), and a KxK conv + BN skip where the shape changes.
    """
    preact = spec.block == "preact"
    se = spec.se
    a = spec.stem_channels
    total = spec.in_channels * a * spec.stem_kernel * spec.stem_kernel
    if not preact:
        total += 2 * a  # stem BN
    skip_k2 = spec.skip_kernel * spec.skip_kernel
    first = True
    for b, c, f in zip(spec.blocks, spec.channels, spec.kernel):
        f2 = f * f
        per_block = c * c * f2 + 4 * c  # conv2 + two BNs of width c (preact corrects below)
        if se:
            h = c // se or 1
            per_block += 2 * c * h + h + c
        # First block of the stage: conv1 from a; preact's first BN is over a.
        total += b * per_block + (a + (b - 1) * c) * c * f2
        if preact:
            total += 2 * (a - c)
        if not first or a != c:
            total += a * c * skip_k2 + 2 * c
        first, a = False, c
    if preact:
        total += 2 * a  # final BN before the head
    return total + (spec.head_features + 1) * spec.classes


def count_macs(spec: ArchSpec) -> int:
    """Multiply-accumulates of one forward pass of one image (eval mode).

    Counted: every convolution (stem, blocks, skips) and every linear layer (SE and head): exactly
    half of `torch.utils.flop_counter.FlopCounterMode`'s figure, which counts 2 FLOPs per MAC.
    Not counted, as FlopCounterMode does not count them either: BatchNorm, ReLU, pooling, the SE
    gate's sigmoid and multiply, residual additions, bias additions, dropout and drop-path.
    """
    se = spec.se
    s = spec.image_size
    a = spec.stem_channels
    total = s * s * a * spec.in_channels * spec.stem_kernel * spec.stem_kernel
    skip_k2 = spec.skip_kernel * spec.skip_kernel
    first = True
    for b, c, f in zip(spec.blocks, spec.channels, spec.kernel):
        if not first:
            s = (s + 1) // 2
        f2 = f * f
        area = s * s
        total += area * c * f2 * (a + (2 * b - 1) * c)  # conv1 of the first block from a, the rest from c
        if se:
            total += b * 2 * c * (c // se or 1)
        if not first or a != c:
            total += area * a * c * skip_k2
        first, a = False, c
    return total + spec.head_features * spec.classes


def fit_width(spec: ArchSpec, budget: int) -> ArchSpec:
    """`spec` with every width (stem and stages) scaled by the largest uniform multiplier whose
    parameter count stays within `budget`, each width rounded to a multiple of 8 (at least 8).

    The count never decreases as the multiplier grows (every term is monotone in every width), so a
    bisection on the counter alone finds the boundary.
    """

    def scaled(m: float) -> ArchSpec:
        return replace(
            spec,
            channels=tuple(round_width(c * m) for c in spec.channels),
            stem_channels=round_width(spec.stem_channels * m),
        )

    smallest = scaled(0.0)
    if count_params(smallest) > budget:
        raise ConfigError(
            f"even at width 8 everywhere this architecture has {count_params(smallest):,} parameters, "
            f"over the budget of {budget:,}."
        )
    lo, hi = 0.0, 1.0
    while count_params(scaled(hi)) <= budget:  # grow until over budget
        lo, hi = hi, hi * 2
    for _ in range(50):
        mid = (lo + hi) / 2
        if count_params(scaled(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return scaled(lo)
