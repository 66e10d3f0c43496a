"""MoCo v3's contrastive loss (Chen, Xie, He 2021, Algorithm 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import gather_with_grad, rank
from sslframe.losses.precision import upcast


def mocov3_contrastive_loss(
    q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, group: ProcessGroup | None = None
) -> torch.Tensor:
    """InfoNCE of this rank's queries against the keys of the global batch, times ``2 * temperature``.

    ``q[i]`` and ``k[i]`` come from two views of image ``i``; every other image's key, on any
    rank, is a negative. The ``2 * temperature`` factor is the paper's pseudo-code (Algorithm 1,
    ``ctr``), which keeps gradient magnitudes independent of the temperature. Averaging this
    value over ranks gives the loss of the concatenated batch.
    """
    q = F.normalize(upcast(q), dim=1)
    k = F.normalize(upcast(k), dim=1)
    keys = gather_with_grad(k, group)
    logits = q @ keys.t() / temperature
    labels = torch.arange(q.shape[0], device=q.device) + rank(group) * q.shape[0]
    return F.cross_entropy(logits, labels) * (2 * temperature)
