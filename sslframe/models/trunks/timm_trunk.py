"""Any timm model as a trunk: ``trunk=timm trunk.name=<timm model name>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from sslframe.errors import UserError
from sslframe.models.trunks.base import Trunk

# Attributes under which timm models keep their repeated units: transformer ``blocks``,
# convolutional ``stages`` (ConvNeXt, RegNet, EfficientNet-style) or ``layers`` (Swin).
_BLOCK_ATTRIBUTES = ("blocks", "stages", "layers")


@dataclass
class TimmTrunkConfig:
    """Any timm model, built without pretrained weights (``name`` is the timm model name)."""

    # The trunk registry key: ``name`` is taken by the timm model name here.
    family: str = "timm"
    name: str = "resnet18"


def repeated_units(model: nn.Module) -> list[nn.Module]:
    """The model's repeated units, found generically.

    First a ``blocks``/``stages``/``layers`` container, then numbered children such as
    ResNet's ``layer1``..``layer4``, then the direct child container with the most entries.
    """
    for attr in _BLOCK_ATTRIBUTES:
        found = getattr(model, attr, None)
        if isinstance(found, (nn.Sequential, nn.ModuleList)) and len(found) > 0:
            return list(found)
    numbered = [
        (int(m.group(1)), child) for n, child in model.named_children() if (m := re.fullmatch(r"layer(\d+)", n))
    ]
    if numbered:
        return [child for _, child in sorted(numbered, key=lambda item: item[0])]
    containers = [c for c in model.children() if isinstance(c, (nn.Sequential, nn.ModuleList))]
    if containers:
        return list(max(containers, key=len))
    return [model]


class TimmTrunk(Trunk):
    """``timm.create_model(name, pretrained=False, num_classes=0)``: pooled features, no classifier.

    ``out_dim`` is timm's ``num_features``; ``blocks()`` exposes the repeated units so FSDP,
    activation checkpointing and per-block compilation apply as to the built-in trunks.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise UserError(
                f"unknown timm model '{name}' for trunk.name; list the names with "
                "python -c \"import timm; print(timm.list_models('*resnet*'))\""
            )
        self.model = timm.create_model(name, pretrained=False, num_classes=0)
        self.out_dim = int(self.model.num_features)

    def blocks(self) -> list[nn.Module]:
        return repeated_units(self.model)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
