"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.cosine import byol_regression_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.ema import cosine_momentum, ema_update_, frozen_copy
from sslframe.models.heads import MLPHead, predictor
from sslframe.models.trunks import Trunk


@dataclass
class BYOLConfig:
    """BYOL (Grill et al. 2020): predict an EMA target's projection; momentum 0.996 -> 1 (cosine)."""

    name: str = "byol"
    base_momentum: float = 0.996
    predictor_hidden_dims: list[int] = field(default_factory=lambda: [4096])
    # Multiplies the paper's loss (2 - 2 cos per view pair, summed over the two pairs). Under LARS
    # the trust ratio cancels it for the weights it adapts, so it sets the step of what LARS
    # excludes (biases, norms) and the balance with weight decay. lightly's BYOL example halves
    # the mean negative cosine of the two pairs: 0.25 of this loss's gradient.
    loss_weight: float = 1.0


@METHODS.register("byol", schema=BYOLConfig)
class BYOL(Method):
    """Online network (trunk, projector ``head``, ``predictor``) regressing an EMA target
    (trunk + projector) of the other view; the loss is symmetrised over the two views (eq. 2).

    The target follows the online weights after every optimizer step with momentum
    tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 (sec. 3.2). Each view goes through the
    networks on its own, so batch norm sees one view at a time as in the paper.
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.predictor = predictor(self.head.output_dim, cfg.predictor_hidden_dims)
        self.target_trunk = frozen_copy(trunk)
        self.target_head = frozen_copy(self.head)
        self.base_momentum = cfg.base_momentum
        if not cfg.loss_weight > 0:
            raise UserError(f"method.loss_weight must be positive (got {cfg.loss_weight})")
        self.loss_weight = float(cfg.loss_weight)

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2 or crops[0].shape != crops[1].shape:
            raise UserError("BYOL needs two global views per image (transform.global_crops=2)")
        z = [self.head(self.trunk(view)) for view in crops[:2]]
        p = [self.predictor(zi) for zi in z]
        with torch.no_grad():
            targets = [self.target_head(self.target_trunk(view)) for view in crops[:2]]
        loss = byol_regression_loss(p[0], targets[1]) + byol_regression_loss(p[1], targets[0])
        if self.loss_weight != 1.0:
            loss = self.loss_weight * loss
        momentum = cosine_momentum(self.base_momentum, ctx.step, ctx.total_steps)
        return StepOutput(
            loss=loss,
            logs={"momentum": momentum},
            embeddings=F.normalize(z[0].detach().float(), dim=1),
        )

    def after_optimizer_step(self, ctx: StepContext) -> None:
        momentum = cosine_momentum(self.base_momentum, ctx.step, ctx.total_steps)
        ema_update_(self.target_trunk, self.trunk, momentum, ctx.skipped)
        ema_update_(self.target_head, self.head, momentum, ctx.skipped)
