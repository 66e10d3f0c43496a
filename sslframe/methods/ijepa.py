"""I-JEPA: joint-embedding predictive architecture on images (Assran et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.masked import latent_prediction_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.ema import ema_update_, frozen_copy
from sslframe.models.token_predictor import TokenPredictor
from sslframe.models.trunks import Trunk
from sslframe.models.trunks.vit import VisionTransformer, gather_tokens
from sslframe.registry import Choices

# Layouts tried per image before accepting a context smaller than ``min_context``.
_MAX_TRIES = 20


@dataclass
class IJEPAConfig:
    """I-JEPA (Assran et al. 2023): predict target-block features of an EMA encoder from a context block."""

    name: str = "ijepa"
    num_targets: int = 4
    target_scale: list[float] = field(default_factory=lambda: [0.15, 0.2])
    target_aspect: list[float] = field(default_factory=lambda: [0.75, 1.5])
    context_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])
    context_aspect: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # Fewest context patches accepted before a block layout is sampled again.
    min_context: int = 10
    predictor_dim: int = 384
    predictor_depth: int = 12
    predictor_heads: int = 16
    # EMA momentum of the target encoder, linear from the first value to the second.
    momentum: list[float] = field(default_factory=lambda: [0.996, 1.0])
    # smooth_l1: the authors' released code (src/train.py: F.smooth_l1_loss), which the published
    # numbers come from; l2: squared L2 per patch (the paper's eq. 1).
    loss: str = "smooth_l1"
    choices: ClassVar[Choices] = {"loss": ("l2", "smooth_l1")}


@dataclass
class BlockMasks:
    """Patch indices (row-major) of one batch: ``context`` ``(B, Kc)``, ``targets`` ``(M, B, Kt)``."""

    context: torch.Tensor
    targets: torch.Tensor


class BlockMaskSampler:
    """I-JEPA's multi-block masking (sec. 3 and appendix C).

    Per batch, one target block size (scale and aspect ratio drawn from their ranges) and one
    context block size; per image, ``num_targets`` target blocks at random positions (they may
    overlap each other) and one context block with every target patch removed, so the context
    never sees a target. Contexts are cut to the batch's shortest one (their first patches in
    row-major order) so they stack.
    """

    def __init__(
        self,
        num_targets: int = 4,
        target_scale: Sequence[float] = (0.15, 0.2),
        target_aspect: Sequence[float] = (0.75, 1.5),
        context_scale: Sequence[float] = (0.85, 1.0),
        context_aspect: Sequence[float] = (1.0, 1.0),
        min_context: int = 10,
    ) -> None:
        self.num_targets = num_targets
        self.target_scale, self.target_aspect = tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.context_aspect = tuple(context_scale), tuple(context_aspect)
        self.min_context = min_context

    @staticmethod
    def block_size(
        grid: tuple[int, int], scale: tuple[float, ...], aspect: tuple[float, ...], generator: torch.Generator | None
    ) -> tuple[int, int]:
        """Height and width (in patches) of a block covering ``scale`` of the grid at ``aspect`` = h / w."""
        u = torch.rand(2, generator=generator).tolist()
        area = grid[0] * grid[1] * (scale[0] + u[0] * (scale[1] - scale[0]))
        ratio = aspect[0] + u[1] * (aspect[1] - aspect[0])
        h = min(max(round(math.sqrt(area * ratio)), 1), grid[0])
        w = min(max(round(math.sqrt(area / ratio)), 1), grid[1])
        return h, w

    @staticmethod
    def place(
        size: tuple[int, int], grid: tuple[int, int], shape: tuple[int, ...], generator: torch.Generator | None
    ) -> torch.Tensor:
        """Boolean ``(*shape, H, W)`` maps, each with one block of ``size`` at a uniformly random
        position."""
        top = torch.randint(grid[0] - size[0] + 1, shape, generator=generator)
        left = torch.randint(grid[1] - size[1] + 1, shape, generator=generator)
        rows = torch.arange(grid[0])
        cols = torch.arange(grid[1])
        in_rows = (rows >= top[..., None]) & (rows < top[..., None] + size[0])
        in_cols = (cols >= left[..., None]) & (cols < left[..., None] + size[1])
        return in_rows[..., :, None] & in_cols[..., None, :]

    def __call__(self, batch: int, grid: tuple[int, int], generator: torch.Generator | None = None) -> BlockMasks:
        """Masks of one batch, drawn on the host (a CPU generator, or torch's default one) for the
        whole batch at once: ``_MAX_TRIES`` layouts per image, the first whose context keeps
        ``min_context`` patches is used (the last one if none does)."""
        target_size = self.block_size(grid, self.target_scale, self.target_aspect, generator)
        context_size = self.block_size(grid, self.context_scale, self.context_aspect, generator)
        blocks = self.place(target_size, grid, (batch, _MAX_TRIES, self.num_targets), generator)
        context = self.place(context_size, grid, (batch, _MAX_TRIES), generator) & ~blocks.any(dim=2)
        counts = context.flatten(2).sum(dim=2)  # (B, tries)
        enough = counts >= self.min_context
        # The first try with enough context, else the last try.
        tries = torch.arange(_MAX_TRIES)
        chosen = torch.where(enough, tries, _MAX_TRIES).min(dim=1).values.clamp(max=_MAX_TRIES - 1)
        picked = torch.arange(batch)
        context, blocks, counts = context[picked, chosen], blocks[picked, chosen], counts[picked, chosen]
        if bool((counts == 0).any()):
            raise UserError(
                "I-JEPA target blocks leave no context patch; lower method.target_scale or method.num_targets"
            )
        keep = int(counts.min())
        return BlockMasks(
            row_major_indices(context.flatten(1), keep),
            row_major_indices(blocks.flatten(2), target_size[0] * target_size[1]).transpose(0, 1),
        )


def row_major_indices(maps: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` set positions of each boolean row of ``maps`` (``(..., N)``), in order."""
    n = maps.shape[-1]
    order = torch.where(maps, 0, n) + torch.arange(n)
    return order.argsort(dim=-1)[..., :count]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from page-locked memory and without waiting when that is CUDA."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


class IJEPAPredictor(TokenPredictor):
    """Narrow ViT predictor (sec. 3): context features plus a mask token at each target position,
    all with fixed sine-cosine positions; its outputs at the mask tokens, mapped back to the
    encoder width, predict the target features. All target blocks run in one batch."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, num_heads: int) -> None:
        super().__init__(encoder_dim, dim, depth, num_heads, encoder_dim, out_name="proj", truncated=True)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """``context`` ``(B, Kc, D)`` at ``context_idx`` ``(B, Kc)``; ``target_idx`` ``(M, B, Kt)``
        -> predictions ``(M, B, Kt, D)``."""
        m, b, kt = target_idx.shape
        x = self.embed(context)
        pos = self.positions(grid, x)
        x = (x + pos[context_idx]).repeat(m, 1, 1)
        queries = self.mask_token.to(x.dtype) + pos[target_idx.reshape(m * b, kt)]
        out = self.predict(torch.cat([x, queries], dim=1))[:, -kt:]
        return out.reshape(m, b, kt, -1)


@METHODS.register("ijepa", schema=IJEPAConfig)
class IJEPA(Method):
    """Context encoder (the trunk), EMA target encoder, predictor (``head``).

    The target encoder sees the whole image; its patch features, layer-normalised as in the
    authors' code, at the target blocks are what the predictor must produce from the context.
    The target's momentum rises linearly from ``momentum[0]`` to ``momentum[1]`` over training
    (sec. 4: 0.996 to 1.0). Reads one view, ``crops[0]``.
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        if not isinstance(trunk, VisionTransformer):
            raise UserError("method=ijepa needs a ViT trunk (trunk=vit)")
        self.trunk = trunk
        self.head = IJEPAPredictor(trunk.embed_dim, cfg.predictor_dim, cfg.predictor_depth, cfg.predictor_heads)
        self.target_encoder = frozen_copy(trunk)
        self.sampler = BlockMaskSampler(
            cfg.num_targets, cfg.target_scale, cfg.target_aspect, cfg.context_scale, cfg.context_aspect, cfg.min_context
        )
        self.momentum_start, self.momentum_end = cfg.momentum
        self.loss_kind = cfg.loss

    def momentum(self, step: int, total_steps: int) -> float:
        """Target EMA momentum after optimizer step ``step``: linear from start to end."""
        progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return self.momentum_start + (self.momentum_end - self.momentum_start) * progress

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        images = crops[0]
        grid = self.trunk.grid_size(images)
        # Drawn on the host (their shapes depend on the draw), as the authors' collator does in the
        # loader, and copied without waiting from page-locked memory on CUDA.
        masks = self.sampler(images.shape[0], grid)
        context_idx, target_idx = (to_device(t, images.device) for t in (masks.context, masks.targets))
        prefix = self.trunk.num_prefix_tokens
        with torch.no_grad():
            h = self.target_encoder.encode(images)[:, prefix:]
            h = F.layer_norm(h, h.shape[-1:])
            targets = torch.stack([gather_tokens(h, t) for t in target_idx])
        z = self.trunk.encode(images, context_idx)[:, prefix:]
        pred = self.head(z, context_idx, target_idx, grid)
        loss = latent_prediction_loss(pred, targets, self.loss_kind)
        logs = {"momentum": self.momentum(ctx.step, ctx.total_steps)}
        return StepOutput(loss=loss, logs=logs, embeddings=F.normalize(z.detach().float().mean(dim=1), dim=1))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        ema_update_(self.target_encoder, self.trunk, self.momentum(ctx.step, ctx.total_steps), ctx.skipped)
