"""DINO: self-distillation with no labels (Caron et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.dino import dino_loss, teacher_temperature, updated_center
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput, update_unless_skipped_
from sslframe.models.ema import cosine_momentum, ema_update_, frozen_copy
from sslframe.models.heads import DINOHead
from sslframe.models.multicrop import group_by_resolution, multicrop_forward, per_view_forward
from sslframe.models.trunks import Trunk
from sslframe.registry import Choices

# The teacher sees the two global crops only (sec. 3.1, multi-crop).
TEACHER_CROPS = 2


@dataclass
class DINOConfig:
    """DINO (Caron et al. 2021): self-distillation to an EMA teacher with centering and sharpening.

    The ``head`` group gives the MLP part of the DINO head (its ``output_dim`` is the bottleneck).
    """

    name: str = "dino"
    out_dim: int = 65536
    # Fix the last layer's weight-norm scale to 1 (False: learn it; the ViT-S recipe).
    norm_last_layer: bool = True
    base_momentum: float = 0.996
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: int = 30
    center_momentum: float = 0.9
    # The last layer receives no update during these first epochs.
    freeze_last_layer_epochs: int = 1
    # What one call of the head sees, which sets its batch-norm statistics (head.batch_norm):
    # "all" crops at once (the authors' multi-crop wrapper), "resolution" (the crops of one size
    # together, as the trunk), or each "crop" on its own (lightly's DINO example). Without batch
    # norm in the head the three compute the same thing.
    head_batches: str = "all"
    # The same for the trunk (student and teacher): the crops of one "resolution" together (the
    # authors' multi-crop wrapper) or each "crop" on its own (lightly's example). A trunk without
    # batch norm (a ViT) computes the same either way.
    trunk_batches: str = "resolution"

    choices: ClassVar[Choices] = {
        "head_batches": ("all", "resolution", "crop"),
        "trunk_batches": ("resolution", "crop"),
    }


@METHODS.register("dino", schema=DINOConfig)
class DINO(Method):
    """Student (trunk + DINO head) distilled from an EMA teacher of the same architecture.

    The student encodes every crop, the teacher the global ones; the loss is the cross-entropy
    between centred, sharpened teacher outputs and student outputs over all pairs of different
    crops. Collapse is avoided by centering (which alone would flatten the outputs) balanced by
    sharpening (a low teacher temperature). The centre is a buffer updated from the teacher
    outputs of the global batch (written after the optimizer step, so a skipped step leaves it as
    it was); the teacher momentum follows a cosine from ``base_momentum`` to
    1, the teacher temperature warms up linearly over epochs, and the head's last layer is
    frozen during the first ``freeze_last_layer_epochs`` epochs.
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = DINOHead.from_config(trunk.out_dim, head_cfg, cfg.out_dim, cfg.norm_last_layer)
        self.teacher_trunk = frozen_copy(trunk)
        self.teacher_head = frozen_copy(self.head)
        self.cfg = cfg
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        # This step's new centre, written after the optimizer step unless the step is skipped.
        self._next_center: torch.Tensor | None = None

    def teacher_temperature(self, epoch: int) -> float:
        cfg = self.cfg
        return teacher_temperature(
            epoch, cfg.warmup_teacher_temperature, cfg.teacher_temperature, cfg.warmup_teacher_temperature_epochs
        )

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < TEACHER_CROPS or crops[0].shape != crops[1].shape:
            raise UserError("DINO needs two global crops per image (transform.global_crops=2)")
        batch = crops[0].shape[0]
        features = self._trunk(self.trunk, crops)
        student = self._heads(self.head, features, crops)
        with torch.no_grad():
            globals_ = crops[:TEACHER_CROPS]
            teacher = self._heads(self.teacher_head, self._trunk(self.teacher_trunk, globals_), globals_)
        temperature = self.teacher_temperature(ctx.epoch)
        loss = dino_loss(student, teacher, self.center, self.cfg.student_temperature, temperature, TEACHER_CROPS)
        self._next_center = updated_center(self.center, teacher, self.cfg.center_momentum, self.group)
        return StepOutput(
            loss=loss,
            logs={"teacher_temperature": temperature},
            embeddings=F.normalize(features[:batch].detach().float(), dim=1),
        )

    def _trunk(self, trunk: Trunk, crops: list[torch.Tensor]) -> torch.Tensor:
        """``trunk`` on ``crops`` in the calls that ``trunk_batches`` asks for (rows in crop order)."""
        forward = per_view_forward if self.cfg.trunk_batches == "crop" else multicrop_forward
        return forward(trunk, crops)

    def _heads(self, head: DINOHead, features: torch.Tensor, crops: list[torch.Tensor]) -> torch.Tensor:
        """``head`` on the features of ``crops`` (rows in crop order), in the calls that
        ``head_batches`` asks for; the outputs keep the crop order."""
        mode = self.cfg.head_batches
        if mode == "all":
            return head(features)
        per_crop = features.split(crops[0].shape[0])
        if mode == "crop":
            return torch.cat([head(f) for f in per_crop])
        return torch.cat([head(torch.cat([per_crop[i] for i in group])) for group in group_by_resolution(crops)])

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if ctx.epoch < self.cfg.freeze_last_layer_epochs:
            for p in self.head.last_layer.parameters():
                p.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._next_center is not None:
            update_unless_skipped_(self.center, self._next_center, ctx.skipped)
            self._next_center = None
        momentum = cosine_momentum(self.cfg.base_momentum, ctx.step, ctx.total_steps)
        ema_update_(self.teacher_trunk, self.trunk, momentum, ctx.skipped)
        ema_update_(self.teacher_head, self.head, momentum, ctx.skipped)
