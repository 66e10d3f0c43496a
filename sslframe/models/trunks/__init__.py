"""Trunk registry: ``trunk.name`` picks the builder, which reads the rest of the trunk config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslframe.models.trunks.base import Trunk
from sslframe.models.trunks.regnet import RegNet
from sslframe.models.trunks.resnet import ResNet
from sslframe.registry import Registry

TRUNKS: Registry[Callable[[Any], Trunk]] = Registry("trunk")


@TRUNKS.register("resnet")
def _resnet(cfg: Any) -> Trunk:
    return ResNet(
        cfg.arch,
        width_multiplier=cfg.width_multiplier,
        small_images=cfg.small_images,
        zero_init_residual=cfg.zero_init_residual,
        norm=cfg.norm,
    )


@TRUNKS.register("regnet")
def _regnet(cfg: Any) -> Trunk:
    return RegNet(cfg.arch, small_images=cfg.small_images)


def build_trunk(cfg: Any) -> Trunk:
    """Build the trunk named by ``cfg.name``; works under ``torch.device('meta')``."""
    return TRUNKS.get(cfg.name)(cfg)


__all__ = ["TRUNKS", "Trunk", "build_trunk"]
