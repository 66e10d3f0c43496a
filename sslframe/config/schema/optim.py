"""The ``optim`` and ``schedule`` groups: optimizer and per-iteration schedules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sslframe.registry import Choices


@dataclass
class OptimConfig:
    """Optimizer. ``lr`` is the peak rate at ``base_batch_size`` images per step; the rate used
    is ``lr * global_batch / base_batch_size`` (linear scaling, Goyal et al. 2017), or ``lr``
    unchanged when ``base_batch_size`` is 0."""

    name: str = "sgd"
    lr: float = 0.1
    base_batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # LARS trust coefficient (eta in You et al. 2017).
    trust_coefficient: float = 0.001
    # Biases and normalisation parameters get no weight decay and no LARS adaptation.
    exclude_bias_and_norm: bool = True
    # Their learning rate relative to the weights' (Barlow Twins: 0.0048 / 0.2 = 0.024).
    bias_lr_factor: float = 1.0
    # Layer-wise learning-rate decay of the trunk: block i of L learns at layer_decay ** (L - i)
    # times the rate, the patch embedding and tokens at layer_decay ** (L + 1) (1: off; DINOv2: 0.9).
    layer_decay: float = 1.0
    # The patch embedding's rate relative to its layer's (DINOv2's patch_embed_lr_mult: 0.2).
    patch_embed_lr_factor: float = 1.0
    choices: ClassVar[Choices] = {"name": "optimizers"}


@dataclass
class ScheduleConfig:
    """Per-iteration learning-rate schedule: linear warmup, then cosine (or constant)."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    # Warmup starts at ``warmup_start_factor * peak`` and cosine ends at ``final_factor * peak``.
    warmup_start_factor: float = 0.0
    final_factor: float = 0.0
    # Weight decay on a half cosine from optim.weight_decay to this value (DINO, I-JEPA);
    # None keeps optim.weight_decay constant.
    final_weight_decay: float | None = None
    choices: ClassVar[Choices] = {"name": "schedules"}
