"""Valid values of the config fields that name a registered component (used by validation)."""

from __future__ import annotations


def lookup(kind: str) -> list[str]:
    if kind == "resnet_archs":
        from sslframe.models.trunks.resnet import RESNET_ARCHS

        return sorted(RESNET_ARCHS)
    if kind == "norms":
        from sslframe.models.trunks.resnet import NORMS

        return sorted(NORMS)
    if kind == "regnet_archs":
        from sslframe.models.trunks.regnet import REGNET_ARCHS

        return sorted(REGNET_ARCHS)
    if kind == "data_sources":
        from sslframe.data.sources import SOURCES

        return SOURCES.names()
    if kind == "optimizers":
        from sslframe.optim.build import OPTIMIZERS

        return OPTIMIZERS.names()
    if kind == "schedules":
        from sslframe.optim.schedules import SCHEDULES

        return SCHEDULES.names()
    raise KeyError(kind)
