"""Learning-rate and weight-decay schedules precomputed for every iteration (as DINOv2 does)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sslframe.registry import Registry

SCHEDULES: Registry[Callable[..., np.ndarray]] = Registry("schedule", choices="schedules")


def _warmup(peak: float, warmup_steps: int, start_factor: float) -> np.ndarray:
    return np.linspace(start_factor * peak, peak, warmup_steps, endpoint=False)


@SCHEDULES.register("cosine")
def warmup_cosine(
    peak: float, total_steps: int, warmup_steps: int = 0, start_factor: float = 0.0, final_factor: float = 0.0
) -> np.ndarray:
    """Linear warmup from ``start_factor * peak`` to ``peak``, then half a cosine down to
    ``final_factor * peak`` at the last step (Loshchilov & Hutter 2017, without restarts)."""
    warmup_steps = min(warmup_steps, total_steps)
    rest = total_steps - warmup_steps
    final = final_factor * peak
    t = np.arange(rest) / max(rest - 1, 1)
    cosine = final + 0.5 * (peak - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([_warmup(peak, warmup_steps, start_factor), cosine])


@SCHEDULES.register("constant")
def warmup_constant(
    peak: float, total_steps: int, warmup_steps: int = 0, start_factor: float = 0.0, final_factor: float = 0.0
) -> np.ndarray:
    """Linear warmup, then ``peak`` for the rest of training (``final_factor`` is unused)."""
    warmup_steps = min(warmup_steps, total_steps)
    return np.concatenate([_warmup(peak, warmup_steps, start_factor), np.full(total_steps - warmup_steps, peak)])


def cosine_weight_decay(base: float, final: float, total_steps: int) -> np.ndarray:
    """Weight decay on half a cosine from ``base`` at the first step to ``final`` at the last
    (DINO, Caron et al. 2021 sec. 4.1: 0.04 to 0.4; I-JEPA, Assran et al. 2023 appendix C)."""
    t = np.arange(total_steps) / max(total_steps - 1, 1)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))
