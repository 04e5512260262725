"""The torch modules an `ArchSpec` describes, and `build_model`.

Each block family's module is registered in BLOCK_MODULES under the name its torch-free entry has
in `nas.blocks`, whose closed-form terms mirror the module: change both together
(tests/test_count.py proves them equal on hundreds of random specs of every block). A block module
is built as `Module(spec, cin, cout, kernel, stride, drop_path)`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import ArchSpec
from nas.blocks import BLOCKS


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


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN (+SE), add skip, ReLU (kuangliu/pytorch-cifar's BasicBlock). The skip is
    a KxK conv + BN where the shape changes."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        self.conv1 = conv(cin, cout, kernel, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.conv2 = conv(cout, cout, kernel)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # each residual branch starts as identity: faster early training
        self.se = SqueezeExcite(cout, spec.se) if spec.se else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.skip = projection(spec, cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.dropout(out)))
        return F.relu(self.skip(x) + self.drop_path(self.se(out)))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv (+SE), add skip (He et al. 2016, identity mappings); its skip conv
    sees the pre-activated input."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, cout, kernel, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.conv2 = conv(cout, cout, kernel)
        self.se = SqueezeExcite(cout, spec.se) if spec.se else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.skip = projection(spec, cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(x)))))
        return self.skip(x) + self.drop_path(self.se(out))


class Bottleneck(nn.Module):
    """1x1 reduce to max(1, cout // expansion), BN, ReLU, k x k (strided, as torchvision's ResNet v1.5),
    BN, ReLU, 1x1 expand to cout, BN (+SE), add skip, ReLU (He et al. 2016, ResNet-50)."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        mid = max(1, cout // spec.expansion)
        self.conv1 = conv(cin, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv(mid, mid, kernel, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.conv3 = conv(mid, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)  # the residual branch starts as identity
        self.se = SqueezeExcite(cout, spec.se) if spec.se else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.skip = projection(spec, cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.dropout(out)))
        return F.relu(self.skip(x) + self.drop_path(self.se(out)))


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2, MCUNet): 1x1 expand to cin * expansion, BN, ReLU6 (left out when
    expansion is 1), depthwise k x k (strided), BN, ReLU6 (+SE over the wide tensor), 1x1 project to
    cout, BN with no activation; the input is added only where the shapes match."""

    def __init__(self, spec: ArchSpec, cin: int, cout: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        mid = cin * spec.expansion
        self.expand = (
            nn.Sequential(conv(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True))
            if spec.expansion != 1
            else nn.Identity()
        )
        self.depthwise = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, spec.se) if spec.se else nn.Identity()
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.project = conv(mid, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout
        if self.residual:
            nn.init.zeros_(self.bn3.weight)  # the residual branch starts as identity
        self.drop_path = DropPath(drop_path if self.residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn2(self.depthwise(self.expand(x))))
        out = self.bn3(self.project(self.dropout(self.se(out))))
        return x + self.drop_path(out) if self.residual else out


def projection(spec: ArchSpec, cin: int, cout: int, stride: int) -> nn.Module:
    """The skip path: identity, or a skip_kernel conv + BN where the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(conv(cin, cout, spec.skip_kernel, stride), nn.BatchNorm2d(cout))


BLOCK_MODULES: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "preact": PreActBlock,
    "bottleneck": Bottleneck,
    "mbconv": MBConv,
}


class ResNet(nn.Module):
    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        preact = BLOCKS[spec.block].preact
        block = BLOCK_MODULES[spec.block]
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
                blocks.append(block(spec, cin, cout, k, stride, rates[len(blocks)]))
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


def build_model(spec: ArchSpec) -> nn.Module:
    """The `torch.nn.Module` that `spec` describes."""
    return ResNet(spec)
