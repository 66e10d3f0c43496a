"""SwAV: Swapping Assignments between multiple Views (Caron et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.distributed.collectives import world_size
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import assigned_crops, swapped_prediction_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput, update_unless_skipped_
from sslframe.models.heads import MLPHead, Prototypes
from sslframe.models.multicrop import multicrop_forward
from sslframe.models.trunks import Trunk


@dataclass
class SwAVConfig:
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes."""

    name: str = "swav"
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    num_prototypes: list[int] = field(default_factory=lambda: [3000])
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    queue_length: int = 0
    queue_start_epoch: int = 15
    freeze_prototypes_steps: int = 313


@METHODS.register("swav", schema=SwAVConfig)
class SwAV(Method):
    """Trunk + projection head + prototypes; codes from the global crops by Sinkhorn-Knopp.

    State kept in buffers (so checkpoints hold it): the feature queue (one per assigned
    crop, ``queue_length / world_size`` rows per rank as in the paper's code) and how many
    of its rows are filled. Prototypes are frozen (no update) for the first
    ``freeze_prototypes_steps`` steps and re-normalised after every optimizer step.
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.prototypes = Prototypes(head_cfg.output_dim, cfg.num_prototypes)
        self.prototypes.normalize_()
        self.temperature = cfg.temperature
        self.epsilon = cfg.epsilon
        self.sinkhorn_iterations = cfg.sinkhorn_iterations
        self.crops_for_assign = list(cfg.crops_for_assign)
        self.queue_length = cfg.queue_length
        self.queue_start_epoch = cfg.queue_start_epoch
        self.freeze_prototypes_steps = cfg.freeze_prototypes_steps
        # Per-rank state: kept out of the shared state dict, saved per rank by the checkpoint.
        self.register_buffer("queue", self._empty_queue(world=1), persistent=False)
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long), persistent=False)
        # The same count on the host, so the step never reads the buffer back from the device.
        self._queue_filled = 0
        # This step's projections, queued after the optimizer step unless it is skipped.
        self._next_queued: tuple[torch.Tensor, list[int], int] | None = None

    def _empty_queue(self, world: int) -> torch.Tensor:
        rows = self.queue_length // world
        return torch.zeros(len(self.crops_for_assign), rows, self.head.output_dim)

    def set_process_group(self, group: Any) -> None:
        super().set_process_group(group)
        if self.queue.shape[1] != self._queue_rows():
            self.queue = self._empty_queue(world_size(group)).to(self.queue.device)
            self.queue_filled.zero_()
            self._queue_filled = 0

    def embed(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """L2-normalised projections of all crops, stacked in crop order."""
        # The trunk runs once per crop resolution; the head runs once on all crops together, so
        # its batch norm sees global and local crops in one batch (as in the authors' code).
        return F.normalize(self.head(multicrop_forward(self.trunk, crops)), dim=1)

    def rank_state_dict(self) -> dict[str, torch.Tensor]:
        return {"queue": self.queue, "queue_filled": self.queue_filled}

    def load_rank_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is None or tuple(state["queue"].shape) != tuple(self.queue.shape):
            # Another world size: queue rows per rank differ, so the queue refills from scratch.
            self.queue.zero_()
            self.queue_filled.zero_()
            self._queue_filled = 0
            return
        self.queue.copy_(state["queue"])
        self.queue_filled.copy_(state["queue_filled"])
        self._queue_filled = int(state["queue_filled"])

    def _queue_rows(self) -> int:
        return self.queue_length // world_size(self.group)

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        num_crops = len(crops)
        batch = crops[0].shape[0]
        assign = assigned_crops(self.crops_for_assign, num_crops)
        z = self.embed(crops)
        scores_per_set = self.prototypes(z)
        use_queue = self._queue_rows() > 0 and ctx.epoch >= self.queue_start_epoch
        queue_ready = use_queue and self._queue_filled >= self._queue_rows()
        loss = z.new_zeros((), dtype=torch.float32)
        for set_index, scores in enumerate(scores_per_set):
            codes = {}
            for slot, i in enumerate(assign):
                with torch.no_grad():
                    crop_scores = scores[i * batch : (i + 1) * batch].detach()
                    if queue_ready:
                        head = self.prototypes.heads[set_index]
                        queued = self.queue[slot].to(head.weight.dtype) @ head.weight.t()
                        crop_scores = torch.cat([queued.to(crop_scores.dtype), crop_scores])
                    q = sinkhorn_knopp(crop_scores, self.epsilon, self.sinkhorn_iterations, self.group)
                    codes[i] = q[-batch:]
            loss = loss + swapped_prediction_loss(scores, codes, num_crops, self.temperature)
        loss = loss / len(scores_per_set)
        if use_queue:
            self._next_queued = (z.detach(), assign, batch)
        return StepOutput(loss=loss, embeddings=z[:batch].detach())

    @torch.no_grad()
    def _push_queue(self, z: torch.Tensor, assign: list[int], batch: int, skipped: torch.Tensor | None) -> None:
        """The newest projections in front of the queue, unless the step is skipped (on the
        device). The host's fill count advances either way: after a skipped step the queue is
        taken for full one batch early, with that batch's rows still empty (zero)."""
        rows = self._queue_rows()
        keep = max(rows - batch, 0)
        for slot, i in enumerate(assign):
            new = z[i * batch : (i + 1) * batch].float()[-rows:]
            update_unless_skipped_(self.queue[slot], torch.cat([new, self.queue[slot, :keep]])[:rows], skipped)
        self._queue_filled = min(self._queue_filled + batch, rows)
        update_unless_skipped_(self.queue_filled, self.queue_filled.new_full((), self._queue_filled), skipped)

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if ctx.step < self.freeze_prototypes_steps:
            for p in self.prototypes.parameters():
                p.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.prototypes.normalize_(ctx.skipped)
        if self._next_queued is not None:
            self._push_queue(*self._next_queued, ctx.skipped)
            self._next_queued = None
