"""DINO's self-distillation loss, teacher centering and temperature (Caron et al. 2021, sec. 3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import all_reduce_sum, world_size
from sslframe.losses.precision import upcast
from sslframe.losses.swav import cross_entropy_over_crop_pairs


def dino_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    teacher_crops: int = 2,
) -> torch.Tensor:
    """Cross-entropy H(P_t, P_s) averaged over every (teacher crop, other student crop) pair.

    ``student`` holds the scores of all C crops and ``teacher`` those of the first
    ``teacher_crops`` (global) crops, crop-major (rows ``[i*B:(i+1)*B]`` are crop ``i``).
    P_t = softmax((t - center) / tau_t) (centering and sharpening, no gradient) and
    P_s = softmax(s / tau_s) (eq. 1 and 3). Each pair's term is a batch mean, so the mean of
    the ranks' losses is the loss over the global batch.
    """
    batch = teacher.shape[0] // teacher_crops
    targets = F.softmax((upcast(teacher).detach() - center) / teacher_temperature, dim=1)
    log_p = F.log_softmax(upcast(student) / student_temperature, dim=1)
    return cross_entropy_over_crop_pairs(dict(enumerate(targets.split(batch))), log_p, batch)


@torch.no_grad()
def updated_center(
    center: torch.Tensor, teacher: torch.Tensor, momentum: float = 0.9, group: ProcessGroup | None = None
) -> torch.Tensor:
    """``center * m + (1 - m) * mean of the teacher scores over the global batch`` (eq. 4): the
    per-rank sums are all-reduced, so every rank gets the same centre."""
    batch_sum = all_reduce_sum(upcast(teacher).sum(dim=0, keepdim=True), group)
    batch_mean = batch_sum / (teacher.shape[0] * world_size(group))
    return center * momentum + batch_mean.to(center.dtype) * (1 - momentum)


def teacher_temperature(epoch: int, warmup_temperature: float, temperature: float, warmup_epochs: int) -> float:
    """Teacher temperature rising linearly from ``warmup_temperature`` at epoch 0 to
    ``temperature`` at epoch ``warmup_epochs - 1``, then constant (sec. 4.1 / appendix: 0.04 to
    0.07 over the first 30 epochs)."""
    if epoch >= warmup_epochs:
        return temperature
    fraction = epoch / max(warmup_epochs - 1, 1)
    return warmup_temperature + (temperature - warmup_temperature) * fraction
