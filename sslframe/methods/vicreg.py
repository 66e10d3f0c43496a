"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce, LeCun 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.losses.vicreg import vicreg_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.heads import MLPHead
from sslframe.models.multicrop import per_view_forward
from sslframe.models.trunks import Trunk


@dataclass
class VICRegConfig:
    """VICReg (Bardes et al. 2022): invariance + variance hinge + covariance decorrelation (eq. 6)."""

    name: str = "vicreg"
    # lambda, mu and nu of eq. 6.
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    # Target standard deviation of each dimension and the epsilon under the square root (eq. 1).
    gamma: float = 1.0
    eps: float = 1e-4


@METHODS.register("vicreg", schema=VICRegConfig)
class VICReg(Method):
    """Trunk + expander; the two views' embeddings are pulled together (invariance) while a
    hinge keeps every dimension's standard deviation over the global batch above ``gamma``
    (variance) and the dimensions are decorrelated (covariance), which prevents collapse."""

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        # Loss weights lambda, mu, nu of eq. 6, the variance target gamma and its epsilon.
        self.coeffs = (float(cfg.sim_coeff), float(cfg.std_coeff), float(cfg.cov_coeff))
        self.gamma = float(cfg.gamma)
        self.eps = float(cfg.eps)

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2:
            raise ValueError("VICReg needs two views per image (transform.global_crops=2)")
        batch = crops[0].shape[0]
        # One view at a time through trunk and expander: batch-norm statistics per view (authors' code).
        z = per_view_forward(lambda view: self.head(self.trunk(view)), crops[:2])
        z1, z2 = z[:batch], z[batch:]
        loss, terms = vicreg_loss(z1, z2, *self.coeffs, gamma=self.gamma, eps=self.eps, group=self.group)
        return StepOutput(loss=loss, logs=terms, embeddings=F.normalize(z1.detach().float(), dim=1))
