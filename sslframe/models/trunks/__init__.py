"""Trunk registry: ``trunk.name`` picks the builder, which reads the rest of the trunk config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslframe.models.trunks.base import Trunk
from sslframe.models.trunks.regnet import RegNet
from sslframe.models.trunks.resnet import ResNet
from sslframe.models.trunks.timm_trunk import TimmTrunk
from sslframe.models.trunks.vit import VisionTransformer
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
        max_pool=cfg.max_pool,
    )


@TRUNKS.register("regnet")
def _regnet(cfg: Any) -> Trunk:
    return RegNet(cfg.arch, small_images=cfg.small_images)


@TRUNKS.register("vit")
def _vit(cfg: Any) -> Trunk:
    return VisionTransformer(
        cfg.arch,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
        pos_embed=cfg.pos_embed,
        class_token=cfg.class_token,
        pool=cfg.pool,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
    )


@TRUNKS.register("timm")
def _timm(cfg: Any) -> Trunk:
    return TimmTrunk(cfg.name)


def build_trunk(cfg: Any) -> Trunk:
    """Build the trunk named by ``cfg.family`` (timm trunks, whose ``name`` is the timm model) or
    ``cfg.name``; works under ``torch.device('meta')`` and on configs read back from checkpoints."""
    return TRUNKS.get(cfg.get("family") or cfg.name)(cfg)


__all__ = ["TRUNKS", "Trunk", "build_trunk"]
