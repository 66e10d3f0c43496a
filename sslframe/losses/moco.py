"""MoCo's InfoNCE against a queue of keys, and the queue update (He et al. 2020, eq. 1 and sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslframe.losses.precision import upcast


def moco_infonce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean over the batch of ``-log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.n_j/t))``.

    ``q`` (B x D) are the queries, ``k`` (B x D) their positive keys and ``queue`` (K x D) the
    negatives, all L2-normalised. The loss of one query depends only on its own key and the
    queue, so the mean over ranks of each rank's loss is the loss over the global batch.
    """
    q, k, queue = upcast(q), upcast(k).detach(), upcast(queue).detach()
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ queue.t()], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@torch.no_grad()
def enqueue_(queue: torch.Tensor, pointer: torch.Tensor, keys: torch.Tensor, skip: torch.Tensor | None = None) -> None:
    """Write ``keys`` into the circular ``queue`` (K x D) from row ``pointer`` on, replacing the
    oldest keys, and advance ``pointer`` (a 0-d long tensor). More keys than rows keep the last K.
    Where ``skip`` (``StepContext.skipped``) is 1, queue and pointer stay as they are (decided on
    the device: skipped keys may be non-finite)."""
    size = queue.shape[0]
    count = keys.shape[0]
    offset = max(count - size, 0)
    keys = keys[-size:]
    rows = (pointer + offset + torch.arange(keys.shape[0], device=queue.device)) % size
    new = keys.to(queue.dtype)
    advance: torch.Tensor | int = count
    if skip is not None:
        skipped = skip.reshape(()).to(queue.device) > 0
        new = torch.where(skipped, queue.index_select(0, rows), new)
        advance = torch.where(skipped, 0, count)
    queue.index_copy_(0, rows, new)
    pointer.add_(advance).remainder_(size)
