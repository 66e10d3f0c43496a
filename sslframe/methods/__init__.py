"""Method registry: ``method.name`` picks the class."""

from __future__ import annotations

from typing import Any

from sslframe.methods.barlowtwins import BarlowTwins
from sslframe.methods.base import Method, StepContext, StepOutput
from sslframe.methods.byol import BYOL
from sslframe.methods.deepclusterv2 import DeepClusterV2
from sslframe.methods.dino import DINO
from sslframe.methods.ijepa import IJEPA
from sslframe.methods.mae import MAE
from sslframe.methods.mocov2 import MoCoV2
from sslframe.methods.mocov3 import MoCoV3
from sslframe.methods.simclr import SimCLR
from sslframe.methods.simsiam import SimSiam
from sslframe.methods.swav import SwAV
from sslframe.methods.vicreg import VICReg
from sslframe.models.trunks import build_trunk
from sslframe.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("swav")(SwAV)
METHODS.register("simclr")(SimCLR)
METHODS.register("barlowtwins")(BarlowTwins)
METHODS.register("vicreg")(VICReg)
METHODS.register("deepclusterv2")(DeepClusterV2)
METHODS.register("mocov3")(MoCoV3)
METHODS.register("mae")(MAE)
METHODS.register("ijepa")(IJEPA)
METHODS.register("mocov2")(MoCoV2)
METHODS.register("byol")(BYOL)
METHODS.register("simsiam")(SimSiam)
METHODS.register("dino")(DINO)


def build_method(cfg: Any) -> Method:
    """Trunk, heads and method from a composed config (``trunk``, ``head``, ``method``)."""
    return METHODS.get(cfg.method.name)(build_trunk(cfg.trunk), cfg.head, cfg.method)


__all__ = ["METHODS", "Method", "StepContext", "StepOutput", "build_method"]
