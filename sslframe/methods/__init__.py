"""The method zoo: importing this package registers every method (``METHODS``, with its config
schema) so that ``method.name`` picks the class. Adding a method is one module here (its class
and schema, registered with ``@METHODS.register(name, schema=...)``), its import below, and its
YAML files under ``configs/method/``."""

from __future__ import annotations

from typing import Any

from sslframe.methods import (  # noqa: F401  (each registers its method)
    barlowtwins,
    byol,
    deepclusterv2,
    dino,
    ibot,
    ijepa,
    mae,
    mocov2,
    mocov3,
    simclr,
    simsiam,
    swav,
    vicreg,
)
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.trunks import build_trunk


def build_method(cfg: Any) -> Method:
    """Trunk, heads and method from a composed config (``trunk``, ``head``, ``method``)."""
    return METHODS.get(cfg.method.name)(build_trunk(cfg.trunk), cfg.head, cfg.method)


__all__ = ["METHODS", "Method", "StepContext", "StepOutput", "build_method"]
