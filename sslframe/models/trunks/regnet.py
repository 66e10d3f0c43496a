"""RegNet X and Y trunks generated from the RegNet design-space parameters.

Radosavovic et al. 2020, "Designing Network Design Spaces", section 3.3: block widths follow
the quantised linear rule u_j = w_0 + w_a * j, w_j = w_0 * w_m^round(log(u_j / w_0) / log(w_m)),
rounded to multiples of 8; consecutive blocks of equal width form a stage. RegNetY adds
squeeze-and-excitation (ratio 0.25 of the block input width). The parameter table gives the
published models (200MF to 32GF) and SEER's 64GF, 128GF, 256GF (Goyal et al. 2021) and
10B (Goyal et al. 2022). Parameter names match timm's ``RegNet`` (``s1.b1.conv2.conv``...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sslframe.models.trunks.base import Trunk
from sslframe.registry import Choices, provide_choices


@dataclass
class RegNetConfig:
    """RegNet X/Y trunks from the RegNet design-space parameters (Radosavovic et al. 2020)."""

    name: str = "regnet"
    arch: str = "regnety_16gf"
    small_images: bool = False
    choices: ClassVar[Choices] = {"arch": "regnet_archs"}


@dataclass(frozen=True)
class RegNetParams:
    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float = 0.0
    bottleneck_ratio: float = 1.0
    stem_width: int = 32


def _x(depth: int, w0: int, wa: float, wm: float, gw: int) -> RegNetParams:
    return RegNetParams(depth, w0, wa, wm, gw)


def _y(depth: int, w0: int, wa: float, wm: float, gw: int) -> RegNetParams:
    return RegNetParams(depth, w0, wa, wm, gw, se_ratio=0.25)


# Values from the RegNet paper's model zoo (pycls), as also listed by torchvision and timm.
REGNET_ARCHS: dict[str, RegNetParams] = {
    "regnet_x_200mf": _x(13, 24, 36.44, 2.49, 8),
    "regnet_x_400mf": _x(22, 24, 24.48, 2.54, 16),
    "regnet_x_600mf": _x(16, 48, 36.97, 2.24, 24),
    "regnet_x_800mf": _x(16, 56, 35.73, 2.28, 16),
    "regnet_x_1_6gf": _x(18, 80, 34.01, 2.25, 24),
    "regnet_x_3_2gf": _x(25, 88, 26.31, 2.25, 48),
    "regnet_x_4gf": _x(23, 96, 38.65, 2.43, 40),
    "regnet_x_6_4gf": _x(17, 184, 60.83, 2.07, 56),
    "regnet_x_8gf": _x(23, 80, 49.56, 2.88, 120),
    "regnet_x_12gf": _x(19, 168, 73.36, 2.37, 112),
    "regnet_x_16gf": _x(22, 216, 55.59, 2.1, 128),
    "regnet_x_32gf": _x(23, 320, 69.86, 2.0, 168),
    "regnet_y_200mf": _y(13, 24, 36.44, 2.49, 8),
    "regnet_y_400mf": _y(16, 48, 27.89, 2.09, 8),
    "regnet_y_600mf": _y(15, 48, 32.54, 2.32, 16),
    "regnet_y_800mf": _y(14, 56, 38.84, 2.4, 16),
    "regnet_y_1_6gf": _y(27, 48, 20.71, 2.65, 24),
    "regnet_y_3_2gf": _y(21, 80, 42.63, 2.66, 24),
    "regnet_y_4gf": _y(22, 96, 31.41, 2.24, 64),
    "regnet_y_6_4gf": _y(25, 112, 33.22, 2.27, 72),
    "regnet_y_8gf": _y(17, 192, 76.82, 2.19, 56),
    "regnet_y_12gf": _y(19, 168, 73.36, 2.37, 112),
    "regnet_y_16gf": _y(18, 200, 106.23, 2.48, 112),
    "regnet_y_32gf": _y(20, 232, 115.89, 2.53, 232),
    # SEER (Goyal et al. 2021, "Self-supervised Pretraining of Visual Features in the Wild").
    "regnet_y_64gf": _y(20, 352, 147.48, 2.4, 328),
    "regnet_y_128gf": _y(27, 456, 160.83, 2.52, 264),
    "regnet_y_256gf": _y(27, 640, 230.83, 2.53, 373),
    # SEER 10B (Goyal et al. 2022, "Vision Models Are More Robust And Fair When Pretrained On
    # Uncurated Images Without Supervision"), as released in VISSL's regnet10B model config.
    "regnet_y_10b": _y(27, 1744, 620.83, 2.52, 1010),
}
provide_choices("regnet_archs", REGNET_ARCHS.keys)


def stage_specs(p: RegNetParams) -> list[tuple[int, int, int]]:
    """(width, depth, group width) of each stage, following the paper's generation rule."""
    q = 8
    widths_cont = [p.w0 + p.wa * j for j in range(p.depth)]
    exps = [round(math.log(w / p.w0) / math.log(p.wm)) for w in widths_cont]
    widths = [int(round(p.w0 * p.wm**e / q) * q) for e in exps]
    stages: list[list[int]] = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    specs = []
    for width, depth in stages:
        # Make the bottleneck width divisible by the group width (section 3.3 compatibility).
        bottleneck = round(width * p.bottleneck_ratio)
        group = min(p.group_width, bottleneck)
        bottleneck = int(round(bottleneck / group) * group)
        specs.append((round(bottleneck / p.bottleneck_ratio), depth, group))
    return specs


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.act = nn.ReLU(inplace=True)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class RegNetBlock(nn.Module):
    """Residual bottleneck block X (with SE: Y): 1x1, 3x3 group conv, [SE], 1x1, + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int, bottleneck_ratio: float, se_ratio: float):
        super().__init__()
        mid = round(cout * bottleneck_ratio)
        self.conv1 = ConvNormAct(cin, mid, 1)
        self.conv2 = ConvNormAct(mid, mid, 3, stride=stride, groups=mid // group_width)
        self.se = SqueezeExcite(mid, round(cin * se_ratio)) if se_ratio > 0 else nn.Identity()
        self.conv3 = ConvNormAct(mid, cout, 1, act=False)
        self.downsample = ConvNormAct(cin, cout, 1, stride=stride, act=False) if stride != 1 or cin != cout else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act(out + shortcut)


class RegNet(Trunk):
    def __init__(self, arch: str | RegNetParams = "regnet_y_16gf", small_images: bool = False, in_channels: int = 3):
        super().__init__()
        p = REGNET_ARCHS[arch] if isinstance(arch, str) else arch
        self.stem = ConvNormAct(in_channels, p.stem_width, 3, stride=1 if small_images else 2)
        cin = p.stem_width
        self._stage_names = []
        for i, (width, depth, group) in enumerate(stage_specs(p), start=1):
            stage = nn.Sequential()
            for j in range(depth):
                stride = 2 if j == 0 else 1
                stage.add_module(f"b{j + 1}", RegNetBlock(cin, width, stride, group, p.bottleneck_ratio, p.se_ratio))
                cin = width
            self.add_module(f"s{i}", stage)
            self._stage_names.append(f"s{i}")
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, n) for n in self._stage_names]

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages() for b in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return x
