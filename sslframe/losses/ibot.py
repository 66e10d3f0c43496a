"""iBOT's masked-image modelling by self-distillation (Zhou et al. 2022, *iBOT: Image BERT
Pre-Training with Online Tokenizer*, sec. 3.2) and its block-wise masks.

The student sees a global crop with some patches replaced by a mask token; the teacher sees the
same crop whole. At every masked position the student's patch distribution is pulled towards
the teacher's (the online tokenizer):

    L_MIM = 1/B sum_b 1/|M_b| sum_{i in M_b} -P_t(patch_i) . log P_s(masked patch_i)

an image without masked patches contributing 0 (the authors' main_ibot.py divides each image's
sum by its masked count, clamped at 1, and averages over the batch; DINOv2's loss does the same).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslframe.losses.precision import upcast


def block_mask(
    grid: tuple[int, int],
    count: int,
    generator: torch.Generator | None = None,
    min_block: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 10,
) -> torch.Tensor:
    """``(H, W)`` bool mask of about ``count`` patches made of rectangles (the block-wise masking
    of BEiT, Bao et al. 2022, sec. 2.5, which iBOT and DINOv2 use): each rectangle has a random
    area between ``min_block`` and what is left to mask and a log-uniform aspect ratio, and is
    kept when it adds at least one patch without passing ``count``; after ``attempts`` misses in
    a row the mask stays a little under ``count``. A ``count`` below ``min_block`` (small grids)
    is masked as one block of about that size."""
    height, width = grid
    mask = torch.zeros(height, width, dtype=torch.bool)
    count = min(count, height * width)
    min_block = max(1, min(min_block, count))
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    misses = 0
    while int(mask.sum()) < count and misses < attempts:
        left = count - int(mask.sum())
        u = torch.rand(4, generator=generator).tolist()
        area = min_block + u[0] * max(left - min_block, 0)
        ratio = math.exp(log_lo + u[1] * (log_hi - log_lo))
        h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < h < height and 0 < w < width:
            top, left_col = int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1))
            block = mask[top : top + h, left_col : left_col + w]
            new = int((~block).sum())
            if 0 < new <= left:
                block.fill_(True)
                misses = 0
                continue
        misses += 1
    return mask


def ibot_masks(
    batch: int,
    grid: tuple[int, int],
    probability: float,
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(batch, H * W)`` bool masks: each image is masked with ``probability``, at a ratio drawn
    uniformly from ``ratio`` (iBOT's ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``: half of the
    images unmasked, the others at 0.1-0.5; DINOv2's mask_sample_probability 0.5 and
    mask_ratio_min_max [0.1, 0.5], which spreads the ratios evenly over a batch instead)."""
    n = grid[0] * grid[1]
    masks = torch.zeros(batch, n, dtype=torch.bool)
    draws = torch.rand(batch, 2, generator=generator).tolist()
    for b, (pick, r) in enumerate(draws):
        if pick < probability:
            target = round((ratio[0] + r * (ratio[1] - ratio[0])) * n)
            masks[b] = block_mask(grid, target, generator).flatten()
    return masks


def masked_tokens(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For host masks ``(B, N)``: the image and token of every masked patch, and its weight
    ``1 / (masked patches of its image)``; computed on the host, where the masks are drawn, so
    the device never has to report how many patches are masked."""
    rows, columns = masks.nonzero(as_tuple=True)
    weights = 1.0 / masks.sum(dim=1).clamp(min=1).float()[rows]
    return rows, columns, weights


def masked_patch_loss(
    student: torch.Tensor,
    teacher_probs: torch.Tensor,
    weights: torch.Tensor,
    batch: int,
    student_temperature: float = 0.1,
) -> torch.Tensor:
    """L_MIM over the masked tokens of ``batch`` images: ``student`` (M x K scores) and
    ``teacher_probs`` (M x K, no gradient) of the M masked tokens, ``weights`` (M) one over the
    masked count of each token's image (``masked_tokens``). Each rank's value is a mean over its
    images, so the mean of the ranks' values is the loss of the global batch."""
    log_p = F.log_softmax(upcast(student) / student_temperature, dim=-1)
    per_token = -(teacher_probs.detach().to(log_p.dtype) * log_p).sum(dim=-1)
    return (per_token * weights.to(per_token.dtype)).sum() / batch


def centered_probs(scores: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """DINO's teacher targets: ``softmax((scores - center) / temperature)`` (no gradient)."""
    return F.softmax((upcast(scores).detach() - center) / temperature, dim=-1)
