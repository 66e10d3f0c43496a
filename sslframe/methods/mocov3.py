"""MoCo v3: momentum contrast without a queue (Chen, Xie, He 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.mocov3 import mocov3_contrastive_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.ema import cosine_momentum, ema_update_, frozen_copy
from sslframe.models.heads import MLPHead
from sslframe.models.trunks import Trunk


@dataclass
class MoCoV3Config:
    """MoCo v3 (Chen, Xie, He 2021): symmetric InfoNCE against a momentum encoder, no queue."""

    name: str = "mocov3"
    temperature: float = 0.2
    # Base of the cosine momentum schedule (rises to 1 over training).
    momentum: float = 0.99
    predictor_hidden_dim: int = 4096
    # The ViT recipe ends the predictor with batch norm; the ResNet-50 one does not.
    predictor_last_batch_norm: bool = True
    # Random, frozen patch projection for ViTs (the paper's stability trick, sec. 4.2).
    freeze_patch_embed: bool = False


@METHODS.register("mocov3", schema=MoCoV3Config)
class MoCoV3(Method):
    """Query encoder = trunk + projector (``head``) + predictor; momentum encoder = EMA copies of
    trunk and projector. Symmetric InfoNCE between each view's query and the other view's key,
    with the keys of every rank as negatives (Algorithm 1).

    The momentum rises from ``momentum`` to 1 on a half cosine over training (the paper follows
    BYOL's schedule, sec. 4). Each view goes through the networks on its own, so batch-norm
    statistics are per view as in the authors' code. With ``freeze_patch_embed`` a ViT keeps its
    random patch projection fixed, the paper's fix for training instability (sec. 4.2).
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        if cfg.freeze_patch_embed:
            patch_embed = getattr(trunk, "patch_embed", None)
            if patch_embed is None:
                raise UserError(
                    "method.freeze_patch_embed=true needs a ViT trunk (trunk=vit); set method.freeze_patch_embed=false"
                )
            patch_embed.requires_grad_(False)
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        dim = self.head.output_dim
        self.predictor = MLPHead(
            dim,
            [cfg.predictor_hidden_dim],
            dim,
            batch_norm=head_cfg.batch_norm,
            last_batch_norm=cfg.predictor_last_batch_norm,
            activation=head_cfg.activation,
        )
        self.momentum_trunk = frozen_copy(trunk)
        self.momentum_head = frozen_copy(self.head)
        self.temperature = cfg.temperature
        self.base_momentum = cfg.momentum

    def momentum(self, step: int, total_steps: int) -> float:
        """EMA momentum after optimizer step ``step``: cosine from the base value to 1."""
        return cosine_momentum(self.base_momentum, step, total_steps)

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2:
            raise ValueError("MoCo v3 needs two views per image (transform.global_crops=2)")
        q1, q2 = (self.predictor(self.head(self.trunk(x))) for x in crops[:2])
        with torch.no_grad():
            k1, k2 = (self.momentum_head(self.momentum_trunk(x)) for x in crops[:2])
        loss = mocov3_contrastive_loss(q1, k2, self.temperature, self.group) + mocov3_contrastive_loss(
            q2, k1, self.temperature, self.group
        )
        logs = {"momentum": self.momentum(ctx.step, ctx.total_steps)}
        return StepOutput(loss=loss, logs=logs, embeddings=F.normalize(q1.detach().float(), dim=1))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        momentum = self.momentum(ctx.step, ctx.total_steps)
        ema_update_(self.momentum_trunk, self.trunk, momentum, ctx.skipped)
        ema_update_(self.momentum_head, self.head, momentum, ctx.skipped)
