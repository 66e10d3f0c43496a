"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce, LeCun 2022, sec. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import gather_with_grad
from sslframe.losses.precision import upcast


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 1: mean over dimensions of ``max(0, gamma - sqrt(Var(z_j) + eps))`` (unbiased variance)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Eq. 3-4: sum of the squared off-diagonal entries of the covariance matrix, over ``d``."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.t() @ centred / (n - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    group: ProcessGroup | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 6 as the authors' code computes it: ``lambda * s(Z, Z') + mu * (v(Z) + v(Z')) / 2 +
    nu * (c(Z) + c(Z'))``.

    The paper's eq. 6 sums the two views' variance terms; the authors' released
    ``main_vicreg.py`` (``VICReg.forward``) averages them (``/ 2`` each) while summing the
    covariance terms, and the published results come from that code, so ``mu`` weighs the
    mean of the two hinges here.

    The invariance ``s`` is the mean squared error over this rank's pairs and every element
    (the paper's Algorithm 1 uses ``F.mse_loss``); the variance and covariance terms are
    computed on the embeddings gathered from every rank, with gradients, so they are
    global-batch statistics. The mean of the ranks' values is the loss of the concatenated
    batch. Returns the loss and its three (unweighted) terms for logging.
    """
    z1, z2 = upcast(z1), upcast(z2)
    invariance = F.mse_loss(z1, z2)
    g1, g2 = gather_with_grad(z1, group), gather_with_grad(z2, group)
    variance = (variance_term(g1, gamma, eps) + variance_term(g2, gamma, eps)) / 2
    covariance = covariance_term(g1) + covariance_term(g2)
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    terms = {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}
    return loss, terms
