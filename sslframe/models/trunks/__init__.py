"""Trunk registry: ``trunk.name`` (``trunk.family`` for timm models) picks the class, registered
with its config schema; the class is built from the config's fields, so a new trunk is one class,
its schema and one ``register`` call here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from sslframe.models.trunks.base import Trunk
from sslframe.models.trunks.regnet import RegNet, RegNetConfig
from sslframe.models.trunks.resnet import ResNet, ResNetConfig
from sslframe.models.trunks.timm_trunk import TimmTrunk, TimmTrunkConfig
from sslframe.models.trunks.vit import VisionTransformer, ViTConfig
from sslframe.registry import Registry

TRUNKS: Registry[Callable[[Any], Trunk]] = Registry("trunk", group="trunk")


def from_fields(cls: type[Trunk], schema: type, skip: tuple[str, ...] = ("name",)) -> Callable[[Any], Trunk]:
    """A builder passing every field of ``schema`` but ``skip`` from the config to ``cls``."""
    names = [f.name for f in dataclasses.fields(schema) if f.name not in skip]

    def build(cfg: Any) -> Trunk:
        values = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        return cls(**{name: values[name] for name in names if name in values})

    return build


TRUNKS.register("resnet", schema=ResNetConfig)(from_fields(ResNet, ResNetConfig))
TRUNKS.register("regnet", schema=RegNetConfig)(from_fields(RegNet, RegNetConfig))
TRUNKS.register("vit", schema=ViTConfig)(from_fields(VisionTransformer, ViTConfig))
# A timm trunk's ``name`` is the timm model's (the registry key is in ``family``).
TRUNKS.register("timm", schema=TimmTrunkConfig)(from_fields(TimmTrunk, TimmTrunkConfig, skip=("family",)))


def build_trunk(cfg: Any) -> Trunk:
    """Build the trunk named by ``cfg.family`` (timm trunks, whose ``name`` is the timm model) or
    ``cfg.name``; works under ``torch.device('meta')`` and on configs read back from checkpoints."""
    return TRUNKS.get(cfg.get("family") or cfg.name)(cfg)


__all__ = ["TRUNKS", "Trunk", "build_trunk"]
