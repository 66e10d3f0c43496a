"""ResNet, ResNeXt and wide ResNet trunks in one table-driven definition.

Parameter names follow torchvision's ``ResNet`` (``conv1``, ``layer1.0.conv2``...), so weights
move between the two without key surgery. Sizes: He et al. 2016 (ResNet), Xie et al. 2017
(ResNeXt), Zagoruyko & Komodakis 2016 (wide_resnet50_2: wider bottleneck only) and Caron et al.
2020 (SwAV's RN50-w2/w4/w5: every width multiplied).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sslframe.models.trunks.base import Trunk
from sslframe.registry import Choices, provide_choices


@dataclass
class ResNetConfig:
    """ResNet / ResNeXt / wide ResNet trunks (He et al. 2016; Xie et al. 2017; SwAV's wide R50)."""

    name: str = "resnet"
    arch: str = "resnet50"
    # Extra multiplier on every width (the SwAV-style widening lives in ``arch``: resnet50w2...).
    width_multiplier: float = 1.0
    # CIFAR-style stem for small images: 3x3 stride-1 convolution and no max-pool.
    small_images: bool = False
    # Whether the stem ends with a 3x3 stride-2 max-pool; null: the stem's default (yes for the
    # ImageNet stem, no for the small-image one).
    max_pool: bool | None = None
    zero_init_residual: bool = False
    # batch | group: group norm keeps results independent of the per-rank batch split.
    norm: str = "batch"
    choices: ClassVar[Choices] = {"arch": "resnet_archs", "norm": "norms"}


@dataclass(frozen=True)
class ResNetArch:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64
    widen: int = 1


RESNET_ARCHS: dict[str, ResNetArch] = {
    "resnet18": ResNetArch("basic", (2, 2, 2, 2)),
    "resnet34": ResNetArch("basic", (3, 4, 6, 3)),
    "resnet50": ResNetArch("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetArch("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetArch("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": ResNetArch("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": ResNetArch("bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext101_64x4d": ResNetArch("bottleneck", (3, 4, 23, 3), groups=64, width_per_group=4),
    "wide_resnet50_2": ResNetArch("bottleneck", (3, 4, 6, 3), width_per_group=128),
    "wide_resnet101_2": ResNetArch("bottleneck", (3, 4, 23, 3), width_per_group=128),
    "resnet50w2": ResNetArch("bottleneck", (3, 4, 6, 3), widen=2),
    "resnet50w4": ResNetArch("bottleneck", (3, 4, 6, 3), widen=4),
    "resnet50w5": ResNetArch("bottleneck", (3, 4, 6, 3), widen=5),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


Norm = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer when a narrow trunk has fewer channels."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


NORMS: dict[str, Norm] = {"batch": nn.BatchNorm2d, "group": group_norm}
provide_choices("resnet_archs", RESNET_ARCHS.keys)
provide_choices("norms", NORMS.keys)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        norm: Norm = nn.BatchNorm2d,
        **_: int,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.Module:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped, strided: the torchvision "v1.5" variant), 1x1 expand."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        groups: int = 1,
        base_width: int = 64,
        norm: Norm = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = norm(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = norm(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.Module:
        return self.bn3


class ResNet(Trunk):
    """ResNet family trunk; ``small_images`` swaps the stem for a 3x3 stride-1 conv, no max-pool.
    ``max_pool`` overrides whether the stem ends with the 3x3 stride-2 max-pool (``None``: the
    stem's own choice); the small-image stem with it suits 28-32 px images at a quarter of the
    small stem's cost (the Fashion-MNIST recipes, configs/recipe/fmnist.yaml).

    ``norm="group"`` replaces every batch norm by a group norm (same parameter names): no
    statistics across samples, so results do not depend on how a batch is split over ranks.
    """

    # Measured on CPU too: 1.2x per training step at ResNet-18, more at ResNet-50 (bench/throughput.py).
    channels_last_devices = ("cpu", "cuda")

    def __init__(
        self,
        arch: str = "resnet50",
        width_multiplier: float = 1.0,
        small_images: bool = False,
        zero_init_residual: bool = False,
        in_channels: int = 3,
        norm: str = "batch",
        max_pool: bool | None = None,
    ) -> None:
        super().__init__()
        spec = RESNET_ARCHS[arch]
        self.norm = NORMS[norm]
        block = BasicBlock if spec.block == "basic" else Bottleneck
        base = max(1, round(64 * spec.widen * width_multiplier))
        self.inplanes = base
        if small_images:
            self.conv1 = nn.Conv2d(in_channels, base, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False)
        pool = not small_images if max_pool is None else max_pool
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if pool else nn.Identity()
        self.bn1 = self.norm(base)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for i, depth in enumerate(spec.layers):
            planes = base * 2**i
            stages.append(self._make_stage(block, planes, depth, 1 if i == 0 else 2, spec))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim = base * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for b in self.blocks():
                nn.init.zeros_(b.last_bn().weight)

    def _make_stage(self, block: type, planes: int, depth: int, stride: int, spec: ResNetArch) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), self.norm(planes * block.expansion)
            )
        kwargs = {"groups": spec.groups, "base_width": spec.width_per_group, "norm": self.norm}
        layers = [block(self.inplanes, planes, stride, downsample, **kwargs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, **kwargs) for _ in range(1, depth)]
        return nn.Sequential(*layers)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages() for b in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x
