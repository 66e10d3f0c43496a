"""iBOT (Zhou et al. 2022) and DINOv2 (Oquab et al. 2024): DINO's [CLS] self-distillation plus
masked-image modelling against an online tokenizer, the EMA teacher.

One class serves both; DINOv2 is iBOT with its own defaults: Sinkhorn-Knopp centering of the
teacher's outputs instead of DINO's running centre (``centering=sinkhorn``), untied [CLS] and
patch heads, and the KoLeo regulariser on the student's [CLS] features (sslframe/losses/koleo.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.dino import teacher_temperature, updated_center
from sslframe.losses.ibot import centered_probs, ibot_masks, masked_patch_loss, masked_tokens
from sslframe.losses.koleo import koleo_loss
from sslframe.losses.precision import upcast
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import cross_entropy_over_crop_pairs
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput, update_unless_skipped_
from sslframe.methods.dino import DINOConfig
from sslframe.models.ema import cosine_momentum, ema_update_, frozen_copy
from sslframe.models.heads import DINOHead
from sslframe.models.multicrop import multicrop_forward
from sslframe.models.trunks import Trunk
from sslframe.models.trunks.vit import VisionTransformer
from sslframe.registry import Choices

GLOBAL_CROPS = 2
SINKHORN_ITERATIONS = 3  # DINOv2's sinkhorn_knopp_teacher


@dataclass
class IBOTConfig(DINOConfig):
    """iBOT (Zhou et al. 2022): DINO's settings for the [CLS] token plus the masked-patch ones.
    Defaults: the authors' main_ibot.py arguments (out_dim and patch_out_dim 8192, student
    temperature 0.1, teacher temperatures 0.04 -> 0.07 over 30 epochs for [CLS] and patches,
    centre momentum 0.9, teacher momentum 0.996, last layer frozen for one epoch, lambda1 =
    lambda2 = 1) and the ViT-S/16 command of their README (shared head, ``--pred_ratio 0 0.3
    --pred_ratio_var 0 0.2``: half of the images masked at 0.1-0.5)."""

    name: str = "ibot"
    out_dim: int = 8192
    patch_out_dim: int = 8192
    # One head for [CLS] and patch tokens (iBOT's --shared_head true), or a second head of its own
    # for the patches (DINOv2's untied heads).
    separate_patch_head: bool = False
    teacher_patch_temperature: float = 0.07
    warmup_teacher_patch_temperature: float = 0.04
    # center: DINO's running centres of the teacher outputs ([CLS] and patches apart);
    # sinkhorn: Sinkhorn-Knopp on the teacher outputs of the global batch (DINOv2).
    centering: str = "center"
    # Share of images whose global crops are masked, and the range of their masking ratio.
    mask_probability: float = 0.5
    mask_ratio: list[float] = field(default_factory=lambda: [0.1, 0.5])
    patch_loss_weight: float = 1.0
    # KoLeo on the student's [CLS] features of each global crop (0: off; DINOv2: 0.1).
    koleo_weight: float = 0.0
    choices: ClassVar[Choices] = {"centering": ("center", "sinkhorn")}


@dataclass
class DINOv2Config(IBOTConfig):
    """DINOv2 (Oquab et al. 2024, sec. 4): the defaults of the authors' ssl_default_config.yaml
    (65536 prototypes in both heads, teacher momentum 0.992, KoLeo weight 0.1, masking 0.5 of the
    images at 0.1-0.5) with what the paper describes for its models: untied heads and
    Sinkhorn-Knopp centering. The heads' last layer learns its weight-norm scale (set to 1 at the
    start, never frozen: the authors' dinov2/layers/dino_head.py has no norm_last_layer)."""

    name: str = "dinov2"
    out_dim: int = 65536
    patch_out_dim: int = 65536
    norm_last_layer: bool = False
    separate_patch_head: bool = True
    base_momentum: float = 0.992
    centering: str = "sinkhorn"
    koleo_weight: float = 0.1


@METHODS.register("ibot", schema=IBOTConfig)
class IBOT(Method):
    """A ViT student and its EMA teacher. The student encodes every crop, its two global crops
    with some patches masked; the teacher encodes the global crops whole. Losses: DINO's
    cross-entropy between teacher and student [CLS] outputs over every pair of different crops,
    plus ``patch_loss_weight`` times the masked-patch loss (sslframe/losses/ibot.py), plus
    ``koleo_weight`` times KoLeo. Masks are drawn on the host from torch's generator, whose state
    the checkpoints keep (exact resume). Centres (``centering=center``) are written after the
    optimizer step unless the step is skipped."""

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        if not isinstance(trunk, VisionTransformer) or trunk.mask_token is None or trunk.cls_token is None:
            raise UserError(
                f"method={cfg.name} needs a ViT with a class token and a mask token: "
                "trunk=vit trunk.mask_token=true trunk.class_token=true"
            )
        if trunk.pool != "cls":
            raise UserError(f"method={cfg.name} distils the class token: set trunk.pool=cls")
        ratio = list(cfg.mask_ratio)
        if len(ratio) != 2 or not 0.0 <= ratio[0] <= ratio[1] <= 1.0 or not 0.0 <= cfg.mask_probability <= 1.0:
            raise UserError(
                "method.mask_ratio must be [low, high] within [0, 1] and method.mask_probability within [0, 1]"
            )
        if not cfg.separate_patch_head and cfg.patch_out_dim != cfg.out_dim:
            raise UserError("a shared head gives patches method.out_dim outputs: set method.patch_out_dim equal")
        self.trunk = trunk
        self.head = DINOHead.from_config(trunk.out_dim, head_cfg, cfg.out_dim, cfg.norm_last_layer)
        self.patch_head = (
            DINOHead.from_config(trunk.out_dim, head_cfg, cfg.patch_out_dim, cfg.norm_last_layer)
            if cfg.separate_patch_head
            else None
        )
        self.teacher_trunk = frozen_copy(trunk)
        self.teacher_head = frozen_copy(self.head)
        self.teacher_patch_head = frozen_copy(self.patch_head) if self.patch_head is not None else None
        self.cfg = cfg
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.register_buffer("patch_center", torch.zeros(1, cfg.patch_out_dim))
        self._next: tuple[torch.Tensor, torch.Tensor] | None = None

    def temperatures(self, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        warmup = cfg.warmup_teacher_temperature_epochs
        return (
            teacher_temperature(epoch, cfg.warmup_teacher_temperature, cfg.teacher_temperature, warmup),
            teacher_temperature(epoch, cfg.warmup_teacher_patch_temperature, cfg.teacher_patch_temperature, warmup),
        )

    def _heads(self, teacher: bool) -> tuple[DINOHead, DINOHead]:
        if teacher:
            return self.teacher_head, self.teacher_patch_head or self.teacher_head
        return self.head, self.patch_head or self.head

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        cfg = self.cfg
        if len(crops) < GLOBAL_CROPS or crops[0].shape != crops[1].shape:
            raise UserError(f"method={cfg.name} needs two global crops per image (transform.global_crops=2)")
        batch = crops[0].shape[0]
        globals_ = torch.cat(crops[:GLOBAL_CROPS])
        grid = self.trunk.grid_size(globals_)
        host_masks = ibot_masks(len(globals_), grid, cfg.mask_probability, tuple(cfg.mask_ratio))
        rows, columns, weights = (t.to(globals_.device, non_blocking=True) for t in masked_tokens(host_masks))
        masks = host_masks.to(globals_.device, non_blocking=True)
        prefix = self.trunk.num_prefix_tokens
        tokens = self.trunk.encode(globals_, mask=masks)
        cls = tokens[:, 0]
        if len(crops) > GLOBAL_CROPS:
            cls = torch.cat([cls, multicrop_forward(self.trunk, crops[GLOBAL_CROPS:])])
        head, patch_head = self._heads(teacher=False)
        student_cls = head(cls)
        student_patches = patch_head(tokens[:, prefix:][rows, columns])
        temperature, patch_temperature = self.temperatures(ctx.epoch)
        with torch.no_grad():
            teacher_tokens = self.teacher_trunk.encode(globals_)
            t_head, t_patch_head = self._heads(teacher=True)
            teacher_cls = t_head(teacher_tokens[:, 0])
            if cfg.centering == "sinkhorn":
                cls_targets = sinkhorn_knopp(teacher_cls, temperature, SINKHORN_ITERATIONS, self.group)
                teacher_patches = t_patch_head(teacher_tokens[:, prefix:][rows, columns])
                patch_targets = sinkhorn_knopp(teacher_patches, patch_temperature, SINKHORN_ITERATIONS, self.group)
            else:
                cls_targets = centered_probs(teacher_cls, self.center, temperature)
                # iBOT centres the patch outputs on every patch token of the teacher, masked or not.
                all_patches = t_patch_head(teacher_tokens[:, prefix:].flatten(0, 1))
                per_crop = all_patches.view(len(globals_), -1, all_patches.shape[-1])
                patch_targets = centered_probs(per_crop[rows, columns], self.patch_center, patch_temperature)
                self._next = (
                    updated_center(self.center, teacher_cls, cfg.center_momentum, self.group),
                    updated_center(self.patch_center, all_patches, cfg.center_momentum, self.group),
                )
        log_p = F.log_softmax(upcast(student_cls) / cfg.student_temperature, dim=1)
        cls_loss = cross_entropy_over_crop_pairs(dict(enumerate(cls_targets.split(batch))), log_p, batch)
        patch_loss = masked_patch_loss(student_patches, patch_targets, weights, len(globals_), cfg.student_temperature)
        loss = cls_loss + cfg.patch_loss_weight * patch_loss
        logs = {"cls_loss": cls_loss.detach(), "patch_loss": patch_loss.detach(), "masked_share": masks.float().mean()}
        if cfg.koleo_weight > 0:
            koleo = sum(koleo_loss(part) for part in tokens[:, 0].split(batch))
            loss = loss + cfg.koleo_weight * koleo
            logs["koleo"] = koleo.detach()
        return StepOutput(
            loss=loss,
            logs={**logs, "teacher_temperature": temperature},
            embeddings=F.normalize(tokens[:batch, 0].detach().float(), dim=1),
        )

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if ctx.epoch < self.cfg.freeze_last_layer_epochs:
            for head in (self.head, self.patch_head):
                if head is not None:
                    for p in head.last_layer.parameters():
                        p.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._next is not None:
            update_unless_skipped_(self.center, self._next[0], ctx.skipped)
            update_unless_skipped_(self.patch_center, self._next[1], ctx.skipped)
            self._next = None
        momentum = cosine_momentum(self.cfg.base_momentum, ctx.step, ctx.total_steps)
        ema_update_(self.teacher_trunk, self.trunk, momentum, ctx.skipped)
        ema_update_(self.teacher_head, self.head, momentum, ctx.skipped)
        if self.patch_head is not None and self.teacher_patch_head is not None:
            ema_update_(self.teacher_patch_head, self.patch_head, momentum, ctx.skipped)


@METHODS.register("dinov2", schema=DINOv2Config)
class DINOv2(IBOT):
    """DINOv2: iBOT with Sinkhorn-Knopp centering, untied heads and KoLeo (see ``DINOv2Config``)."""
