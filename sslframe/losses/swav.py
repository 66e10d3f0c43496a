"""SwAV swapped-prediction loss (Caron et al. 2020, eq. 1-2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sslframe.losses.precision import upcast


def cross_entropy_over_crop_pairs(
    targets: dict[int, torch.Tensor], log_probs: torch.Tensor, batch: int
) -> torch.Tensor:
    """Mean over every (target crop i, other crop v != i) pair of the batch mean of
    ``-sum_k targets[i] * log_probs[v]``: SwAV's swapped prediction (eq. 1) and DINO's
    self-distillation (eq. 3) share it. ``log_probs`` holds every crop's rows in crop order
    (rows ``[v*B:(v+1)*B]`` are crop ``v``); ``targets`` maps a crop index to its ``B x K`` target."""
    num_crops = log_probs.shape[0] // batch
    total = log_probs.new_zeros(())
    terms = 0
    for i, q in targets.items():
        for v in range(num_crops):
            if v != i:
                total = total - (q * log_probs[v * batch : (v + 1) * batch]).sum(dim=1).mean()
                terms += 1
    return total / terms


def swapped_prediction_loss(
    scores: torch.Tensor, codes: dict[int, torch.Tensor], num_crops: int, temperature: float = 0.1
) -> torch.Tensor:
    """Average cross-entropy between each assigned crop's codes and every other crop's prediction.

    ``scores`` holds all crops' prototype scores stacked in crop order (num_crops * B x K);
    ``codes`` maps an assigned crop index to its target codes (B x K, rows summing to 1).
    Loss = mean over (i in codes, v != i) of -sum_k q_i log softmax(scores_v / temperature).
    """
    log_probs = F.log_softmax(upcast(scores) / temperature, dim=1)
    return cross_entropy_over_crop_pairs(codes, log_probs, scores.shape[0] // num_crops)


def assigned_crops(crops_for_assign: Sequence[int], num_crops: int) -> list[int]:
    bad = [i for i in crops_for_assign if not 0 <= i < num_crops]
    if bad:
        raise ValueError(f"crops_for_assign {list(crops_for_assign)} names crops outside 0..{num_crops - 1}")
    return list(crops_for_assign)
