"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, sec. 2, eq. 1-2)."""

from __future__ import annotations

import torch
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import sum_over_ranks, world_size
from sslframe.losses.precision import upcast


def global_standardize(z: torch.Tensor, group: ProcessGroup | None, eps: float = 1e-5) -> torch.Tensor:
    """Each dimension of ``z`` centred and scaled by the mean and (biased) variance of the
    global batch, as batch norm without affine parameters does in training mode."""
    total = z.shape[0] * world_size(group)
    mean = sum_over_ranks(z.sum(dim=0), group) / total
    centred = z - mean
    var = sum_over_ranks(centred.pow(2).sum(dim=0), group) / total
    return centred / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, group: ProcessGroup | None = None) -> torch.Tensor:
    """The D x D cross-correlation matrix of eq. 2 over the global batch: the per-rank sums
    of products of standardized embeddings, added over ranks, over the global batch size."""
    z1 = global_standardize(upcast(z1), group)
    z2 = global_standardize(upcast(z2), group)
    total = z1.shape[0] * world_size(group)
    return sum_over_ranks(z1.t() @ z2, group) / total


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 0.0051, group: ProcessGroup | None = None
) -> torch.Tensor:
    """Eq. 1: ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``C`` the
    cross-correlation of the two views' embeddings over the global batch.

    Every rank returns the same value (the global loss); with DDP's gradient averaging the
    update equals the one-process update on the concatenated batch.
    """
    c = cross_correlation(z1, z2, group)
    diagonal = torch.diagonal(c)
    on_diag = (1 - diagonal).pow(2).sum()
    off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diag + lambda_offdiag * off_diag
