"""Barlow Twins: redundancy reduction between two views (Zbontar et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.losses.barlow import barlow_twins_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.heads import MLPHead
from sslframe.models.multicrop import per_view_forward
from sslframe.models.trunks import Trunk


@dataclass
class BarlowTwinsConfig:
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of two views pushed to the identity."""

    name: str = "barlowtwins"
    # Weight of the off-diagonal (redundancy reduction) term, lambda in eq. 1.
    lambda_offdiag: float = 0.0051


@METHODS.register("barlowtwins", schema=BarlowTwinsConfig)
class BarlowTwins(Method):
    """Trunk + projector; the cross-correlation of the two views' projections over the global
    batch is pushed towards the identity (sec. 2). Collapse is avoided because the off-diagonal
    terms decorrelate the embedding dimensions and the diagonal keeps each one informative."""

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.lambda_offdiag = cfg.lambda_offdiag

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2:
            raise ValueError("Barlow Twins needs two views per image (transform.global_crops=2)")
        batch = crops[0].shape[0]
        # One view at a time through trunk and projector: batch-norm statistics per view (authors' code).
        z = per_view_forward(lambda view: self.head(self.trunk(view)), crops[:2])
        z1, z2 = z[:batch], z[batch:]
        loss = barlow_twins_loss(z1, z2, self.lambda_offdiag, self.group)
        return StepOutput(loss=loss, embeddings=F.normalize(z1.detach().float(), dim=1))
