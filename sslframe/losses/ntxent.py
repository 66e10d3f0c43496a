"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import gather_with_grad, rank
from sslframe.losses.precision import upcast


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, group: ProcessGroup | None = None
) -> torch.Tensor:
    """Mean NT-Xent over this rank's 2B anchors, with negatives from every rank's views.

    ``z1[i]`` and ``z2[i]`` are two views of image ``i``. Each anchor's positive is its other
    view; the other 2N - 2 embeddings of the global batch (N images over all ranks) are its
    negatives. Averaging this value over ranks gives the loss over the concatenated batch.
    """
    z1 = F.normalize(upcast(z1), dim=1)
    z2 = F.normalize(upcast(z2), dim=1)
    batch = z1.shape[0]
    keys = torch.cat([gather_with_grad(z1, group), gather_with_grad(z2, group)])  # 2N x D
    total = keys.shape[0] // 2
    anchors = torch.cat([z1, z2])  # 2B x D
    logits = anchors @ keys.t() / temperature
    offset = rank(group) * batch
    local = torch.arange(batch, device=z1.device) + offset
    self_index = torch.cat([local, local + total])
    positive = torch.cat([local + total, local])
    is_self = F.one_hot(self_index, num_classes=keys.shape[0]).bool()
    logits = logits.masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive)
