"""Losses of the predictive (masked) methods: MAE's pixel reconstruction, I-JEPA's latent prediction.

Both are means of per-sample terms, so they need no process group: averaging the ranks' values
(as DDP averages gradients) gives the loss of the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslframe.losses.precision import upcast


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch's pixels minus their mean, divided by ``sqrt(var + eps)`` (MAE sec. 3, "normalized
    pixels"; the variance is the unbiased one, as in the authors' code)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_loss(
    pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, normalize_target: bool = True
) -> torch.Tensor:
    """MAE's loss (He et al. 2022, sec. 3): mean squared error per patch, averaged over masked patches.

    ``pred`` and ``patches`` are ``(B, N, p*p*3)``; ``mask`` is ``(B, N)`` with 1 for a masked
    (hidden) patch. Visible patches do not count.
    """
    pred, patches, mask = upcast(pred), upcast(patches), upcast(mask)
    target = normalize_patches(patches) if normalize_target else patches
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def latent_prediction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """I-JEPA's loss between predicted and target patch features, both ``(..., D)``.

    ``l2``: squared L2 distance per patch, averaged over target patches, blocks and images
    (Assran et al. 2023, eq. 1). ``smooth_l1``: the element-wise smooth L1 of the authors' code.
    """
    pred, target = upcast(pred), upcast(target)
    if kind == "l2":
        return (pred - target).pow(2).sum(dim=-1).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    raise ValueError(f"unknown latent prediction loss '{kind}'")
