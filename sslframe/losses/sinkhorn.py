"""Sinkhorn-Knopp equal-partition assignment (Cuturi 2013; SwAV, Caron et al. 2020, eq. 3)."""

from __future__ import annotations

import torch
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import all_reduce_max, all_reduce_sum
from sslframe.losses.precision import upcast


@torch.no_grad()
def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, group: ProcessGroup | None = None
) -> torch.Tensor:
    """Soft codes Q (B x K) whose rows sum to 1 and whose columns are near-equally used.

    ``scores`` are the local rows (B samples x K prototypes). Q = exp(scores / epsilon) is
    alternately rescaled so that every prototype receives 1/K of the mass and every sample
    1/B_global, where the sums run over the batch of every rank in ``group``. The last step
    normalises samples, so each returned row sums to exactly 1.
    """
    scores = upcast(scores) / epsilon
    # Subtracting the global maximum leaves Q unchanged after normalisation and avoids overflow.
    # A rank may hold no rows (DINOv2's masked tokens on a rank that masked none): it still takes
    # part in every collective.
    local_max = scores.max() if scores.numel() else scores.new_full((), float("-inf"))
    scores = scores - all_reduce_max(local_max.clone(), group)
    q = torch.exp(scores).t()  # K x B
    num_prototypes = q.shape[0]
    # The global batch, filled on the device (no tensor built on the host and copied over).
    batch = all_reduce_sum(q.new_full((), float(q.shape[1])), group)
    q /= all_reduce_sum(q.sum(), group)
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True), group)
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    return (q * batch).t()
