"""MoCo v2: momentum contrast with an MLP head (He et al. 2020; Chen et al. 2020, "Improved baselines")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.distributed.collectives import gather_with_grad, rank, world_size
from sslframe.errors import UserError
from sslframe.losses.moco import enqueue_, moco_infonce_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.ema import ema_update_, frozen_copy
from sslframe.models.heads import MLPHead
from sslframe.models.split_bn import split_batch_norm
from sslframe.models.trunks import Trunk

# Seeds the key-batch permutation of each step; every rank derives the same one.
_SHUFFLE_SEED = 0x5EED


@dataclass
class MoCoV2Config:
    """MoCo v2 (Chen et al. 2020, "Improved baselines"): InfoNCE against a queue of momentum-encoder keys."""

    name: str = "mocov2"
    temperature: float = 0.2
    # Key encoder momentum (constant, He et al. 2020 sec. 3.2).
    momentum: float = 0.999
    queue_length: int = 65536
    # Shuffle the key encoder's batch across ranks so batch norm cannot leak the positive (sec. 3.3).
    shuffle_bn: bool = True
    # In one process (no ranks to shuffle across), shuffle-BN's substitute from the authors'
    # CIFAR-10 demo: batch norm over this many groups of the batch, keys shuffled before grouping
    # (1: off). The per-process batch must be a multiple of it.
    bn_splits: int = 8


def shuffle_order(count: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The permutation of the global key batch at ``step``, identical on every rank; drawn on
    ``device`` by a generator of that device seeded with the step (no host tensor to copy)."""
    generator = torch.Generator(device=device).manual_seed(_SHUFFLE_SEED + step)
    return torch.randperm(count, generator=generator, device=device)


@METHODS.register("mocov2", schema=MoCoV2Config)
class MoCoV2(Method):
    """Query encoder (trunk + MLP head), momentum key encoder and a queue of negative keys.

    The first view is the query, the second the key (the paper's asymmetric form). The queue
    (K x D normalised keys) and its write pointer are buffers in the shared state dict: every
    rank enqueues the keys of the whole global batch, so the queue is identical on all ranks.

    Shuffle-BN (He et al. 2020, sec. 3.3): the key encoder's batch norm would otherwise see the
    positive's own sub-batch statistics. Across ranks the global key batch is gathered, permuted
    with a generator seeded by the step (the same on every rank, no communication), each rank
    encodes its slice of the permuted batch, and the keys are gathered and un-permuted. In one
    process shuffling alone would change nothing (batch statistics do not depend on order), so
    the single-device substitute of the authors' CIFAR-10 demo is used instead: batch norm of
    both encoders over ``bn_splits`` groups of the batch (``split_batch_norm``), the keys shuffled
    before they are grouped, so a query and its key are normalised with different samples.
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.key_trunk = frozen_copy(trunk)
        self.key_head = frozen_copy(self.head)
        self.temperature = cfg.temperature
        self.momentum = cfg.momentum
        self.shuffle_bn = cfg.shuffle_bn
        self.bn_splits = int(cfg.bn_splits)
        if cfg.queue_length < 1:
            raise UserError(f"method.queue_length must be at least 1 (got {cfg.queue_length})")
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_length, self.head.output_dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self._next_keys: torch.Tensor | None = None

    def encode_keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised key-encoder outputs (batch-norm statistics of ``x`` as one batch)."""
        return F.normalize(self.key_head(self.key_trunk(x)), dim=1)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(this rank's keys, the global batch's keys in rank order), with shuffle-BN across ranks."""
        world = world_size(self.group)
        if world == 1:
            if not self.shuffle_bn or self.bn_splits <= 1:
                k = self.encode_keys(x)
                return k, k
            # Shuffled on the device (this rank's RNG stream, which checkpoints hold), then split.
            order = torch.randperm(x.shape[0], device=x.device)
            with split_batch_norm(self.key_trunk, self.bn_splits), split_batch_norm(self.key_head, self.bn_splits):
                shuffled = self.encode_keys(x[order])
            k = torch.empty_like(shuffled)
            k[order] = shuffled
            return k, k
        batch = x.shape[0]
        mine = slice(rank(self.group) * batch, (rank(self.group) + 1) * batch)
        if not self.shuffle_bn:
            k = self.encode_keys(x)
            return k, gather_with_grad(k, self.group)
        images = gather_with_grad(x, self.group)
        order = shuffle_order(images.shape[0], step, x.device)
        shuffled = gather_with_grad(self.encode_keys(images[order[mine]]), self.group)
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled
        return keys[mine], keys

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2 or crops[0].shape != crops[1].shape:
            raise UserError("MoCo v2 needs two global views per image (transform.global_crops=2)")
        splits = self.bn_splits if self.shuffle_bn and world_size(self.group) == 1 else 1
        with split_batch_norm(self.trunk, splits), split_batch_norm(self.head, splits):
            q = F.normalize(self.head(self.trunk(crops[0])), dim=1)
        k, all_keys = self.keys(crops[1], ctx.step)
        # The loss keeps its own copy of the queue: enqueueing after the step must not change it.
        loss = moco_infonce_loss(q, k, self.queue.clone(), self.temperature)
        self._next_keys = all_keys.detach()
        return StepOutput(loss=loss, embeddings=q.detach().float())

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._next_keys is not None:
            # Enqueued after the step, unless it is skipped (its keys may be non-finite).
            enqueue_(self.queue, self.queue_pointer, self._next_keys, ctx.skipped)
            self._next_keys = None
        ema_update_(self.key_trunk, self.trunk, self.momentum, ctx.skipped)
        ema_update_(self.key_head, self.head, self.momentum, ctx.skipped)
