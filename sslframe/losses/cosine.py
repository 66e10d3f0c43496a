"""Cosine losses of the predictor + stop-gradient methods (BYOL, SimSiam)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslframe.losses.precision import upcast


def negative_cosine_similarity(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -<p/||p||, z/||z||>, averaged over the batch, with ``z`` detached
    (the stop-gradient of Chen & He 2021, eq. 1-3)."""
    return -(F.normalize(upcast(p), dim=1) * F.normalize(upcast(z).detach(), dim=1)).sum(dim=1).mean()


def byol_regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z), averaged over the batch, with the
    target projection ``z`` detached (Grill et al. 2020, eq. 2)."""
    return 2 + 2 * negative_cosine_similarity(p, z)
