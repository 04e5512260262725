"""The torch modules an `ArchSpec` describes. `nas.count` mirrors this file in closed form: change
both together (tests/test_count.py proves them equal on hundreds of random specs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec


def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by BatchNorm, which has its own shift.
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, ratio: int):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's whole residual branch with probability p while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
        return x * mask / keep


class Block(nn.Module):
    """`basic`: conv-BN-ReLU-conv-BN (+SE), add skip, ReLU (kuangliu/pytorch-cifar's BasicBlock).
    `preact`: BN-ReLU-conv-BN-ReLU-conv (+SE), add skip (He et al. 2016, identity mappings); its skip
    conv sees the pre-activated input. The skip is a KxK conv + BN when the shape changes."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        self.preact = spec.block == "preact"
        self.bn1 = nn.BatchNorm2d(cin if self.preact else cout)
        self.conv1 = conv(cin, cout, kernel, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.conv2 = conv(cout, cout, kernel)
        self.se = SqueezeExcite(cout, spec.se) if spec.se else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.skip = (
            nn.Sequential(conv(cin, cout, spec.skip_kernel, stride), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        if not self.preact:
            nn.init.zeros_(self.bn2.weight)  # each residual branch starts as identity: faster early training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            x = F.relu(self.bn1(x))
            out = self.conv1(x)
            out = self.conv2(self.dropout(F.relu(self.bn2(out))))
            return self.skip(x) + self.drop_path(self.se(out))
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.dropout(out)))
        return F.relu(self.skip(x) + self.drop_path(self.se(out)))


class ResNet(nn.Module):
    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        preact = spec.block == "preact"
        self.stem = nn.Sequential(conv(spec.in_channels, spec.stem_channels, spec.stem_kernel))
        if not preact:  # a pre-activation network normalises at the start of each block instead
            self.stem.append(nn.BatchNorm2d(spec.stem_channels))
            self.stem.append(nn.ReLU(inplace=True))
        depth = sum(spec.blocks)
        rates = [spec.drop_path * i / max(1, depth - 1) for i in range(depth)]
        blocks, cin = [], spec.stem_channels
        for stage, (n, cout, k) in enumerate(zip(spec.blocks, spec.channels, spec.kernel)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Block(spec, cin, cout, k, stride, rates[len(blocks)]))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        # The last pre-activation block's sum is un-normalised: BN-ReLU it before the head.
        self.final = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1) if spec.pool == "global" else nn.AvgPool2d(spec.pool, spec.pool)
        self.head = nn.Linear(spec.head_features, spec.classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final(self.blocks(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))
