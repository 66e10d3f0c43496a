"""DeepCluster-v2 (Caron et al. 2020, SwAV paper sec. 4 and appendix "DeepCluster-v2")."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.distributed.collectives import all_gather_cat
from sslframe.errors import UserError
from sslframe.losses.kmeans import broadcast_from_first, init_centroids, spherical_kmeans
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput, update_unless_skipped_
from sslframe.models.heads import MLPHead
from sslframe.models.multicrop import multicrop_forward
from sslframe.models.trunks import Trunk

log = logging.getLogger(__name__)

# Assignment of a sample not clustered yet (not seen in the previous epoch): ignored by the loss.
UNASSIGNED = -1


@dataclass
class DeepClusterV2Config:
    """DeepCluster-v2 (Caron et al. 2020, SwAV paper appendix): predict k-means clusters of last epoch's features."""

    name: str = "deepclusterv2"
    temperature: float = 0.1
    # One k-means (and one prototype set) per entry.
    num_prototypes: list[int] = field(default_factory=lambda: [3000, 3000, 3000])
    # Crops whose projections fill the memory bank; prototype set j clusters crop j modulo their count.
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    kmeans_iterations: int = 10


@METHODS.register("deepclusterv2", schema=DeepClusterV2Config)
class DeepClusterV2(Method):
    """Trunk + projection head; every crop predicts the k-means cluster of its image.

    At the start of each epoch, spherical k-means runs (once per prototype set) on a memory
    bank holding the previous epoch's normalised projections of the ``crops_for_assign``
    crops; the centroids become the prototypes and each sample's cluster goes into a
    dataset-long assignment table gathered from all ranks. The loss is the cross-entropy of
    every crop's prototype scores over ``temperature`` against its image's assignment,
    averaged over prototype sets. Clustering of the whole previous epoch, rather than of the
    current batch, is what keeps the clusters from collapsing onto one.

    The prototypes are never trained (the authors' scripts freeze them for 300k iterations,
    longer than training), so they are buffers. State: prototypes, assignments and the last
    clustered epoch are shared (identical on every rank, in ``state_dict``); the memory bank
    of this rank's samples is per-rank (``rank_state_dict``).

    As in the authors' ``main_deepclusterv2.py`` (``init_memory``), the bank is filled by one
    forward pass over the data before training (``needs_data_pass``; model in training mode, no
    gradients), so the first epoch already trains on clusters. The pass runs again only when the
    bank is empty at the start of a run (a fresh run, or one resumed at another world size).
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.num_prototypes = [int(k) for k in cfg.num_prototypes]
        self.temperature = float(cfg.temperature)
        self.crops_for_assign = [int(i) for i in cfg.crops_for_assign]
        self.kmeans_iterations = int(cfg.kmeans_iterations)
        dim = head_cfg.output_dim
        for j, k in enumerate(self.num_prototypes):
            self.register_buffer(f"prototypes_{j}", F.normalize(torch.randn(k, dim), dim=1))
        self.register_buffer("assignments", torch.full((len(self.num_prototypes), 0), UNASSIGNED))
        self.register_buffer("clustered_epoch", torch.tensor(-1))
        self.register_buffer("bank", torch.zeros(len(self.crops_for_assign), 0, dim), persistent=False)
        self.register_buffer("bank_index", torch.full((0,), UNASSIGNED), persistent=False)
        self._next_remembered: tuple[torch.Tensor, StepContext, int] | None = None

    def prototypes(self, j: int) -> torch.Tensor:
        return getattr(self, f"prototypes_{j}")

    def bind_dataset(self, num_samples: int, rank: int, world_size: int) -> None:
        per_rank = num_samples // world_size
        if max(self.num_prototypes) > per_rank:
            raise UserError(
                f"method.num_prototypes={self.num_prototypes} needs at least {max(self.num_prototypes)} samples "
                f"per process; the dataset has {num_samples} over {world_size} processes (use fewer prototypes)"
            )
        rows = math.ceil(num_samples / world_size)
        device = self.bank.device
        self.bank = torch.zeros(len(self.crops_for_assign), rows, self.bank.shape[2], device=device)
        self.bank_index = torch.full((rows,), UNASSIGNED, device=device)
        self.assignments = torch.full((len(self.num_prototypes), num_samples), UNASSIGNED, device=device)

    def rank_state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank, "bank_index": self.bank_index}

    def load_rank_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is None or tuple(state["bank"].shape) != tuple(self.bank.shape):
            # Another world size: this rank's samples differ, so its bank refills from scratch.
            self.bank.zero_()
            self.bank_index.fill_(UNASSIGNED)
            return
        self.bank.copy_(state["bank"])
        self.bank_index.copy_(state["bank_index"])

    def needs_data_pass(self) -> bool:
        # One read from the device, once per run (the loop asks before training).
        return bool((self.bank_index == UNASSIGNED).all())

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if ctx.indices is None:
            raise ValueError("DeepCluster-v2 needs the dataset index of every sample (StepContext.indices)")
        if self.bank_index.numel() == 0:
            raise ValueError("DeepCluster-v2 needs bind_dataset() before training (it sizes the memory bank)")
        batch = crops[0].shape[0]
        if ctx.data_pass:
            # Filling the bank before training: only the assigned crops are embedded.
            z = F.normalize(self.head(multicrop_forward(self.trunk, [crops[i] for i in self.crops_for_assign])), dim=1)
            self._remember(z, ctx, batch, None, slots_in_order=True)
            return StepOutput(loss=z.new_zeros((), dtype=torch.float32))
        if ctx.epoch > int(self.clustered_epoch):
            self.cluster(ctx.epoch)
        z = F.normalize(self.head(multicrop_forward(self.trunk, crops)), dim=1)
        targets = self.assignments[:, ctx.indices].repeat(1, len(crops))
        loss = z.new_zeros((), dtype=torch.float32)
        for j in range(len(self.num_prototypes)):
            scores = z.float() @ self.prototypes(j).t() / self.temperature
            if bool((targets[j] != UNASSIGNED).any()):
                loss = loss + F.cross_entropy(scores, targets[j], ignore_index=UNASSIGNED)
            else:
                # Nothing assigned (a run driven without the data pass): a zero loss that still
                # reaches every parameter.
                loss = loss + 0.0 * scores.sum()
        # Remembered after the optimizer step, unless it is skipped.
        self._next_remembered = (z.detach(), ctx, batch)
        return StepOutput(loss=loss / len(self.num_prototypes), embeddings=z[:batch].detach())

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self._next_remembered is not None:
            self._remember(*self._next_remembered, ctx.skipped)
            self._next_remembered = None

    @torch.no_grad()
    def _remember(
        self, z: torch.Tensor, ctx: StepContext, batch: int, skipped: torch.Tensor | None, slots_in_order: bool = False
    ) -> None:
        """Write this batch's assigned-crop projections at its position in the epoch, unless the
        step was skipped (``skipped`` 1). ``z`` holds every crop in crop order, or only the
        assigned crops in slot order (``slots_in_order``)."""
        start = (ctx.step % ctx.steps_per_epoch) * batch
        if start + batch > self.bank_index.numel():
            raise ValueError(f"memory bank of {self.bank_index.numel()} rows overflows at row {start + batch}")
        for slot, crop in enumerate(self.crops_for_assign):
            row = slot if slots_in_order else crop
            new = z[row * batch : (row + 1) * batch]
            update_unless_skipped_(self.bank[slot, start : start + batch], new, skipped)
        update_unless_skipped_(self.bank_index[start : start + batch], ctx.indices, skipped)

    @torch.no_grad()
    def cluster(self, epoch: int) -> None:
        """k-means on the memory bank for every prototype set; refresh prototypes and assignments."""
        self.clustered_epoch.fill_(epoch)
        filled = self.bank_index != UNASSIGNED
        first_rank_rows = broadcast_from_first(filled.sum().reshape(1), self.group)
        if int(first_rank_rows) < max(self.num_prototypes):
            # Too little remembered (a bank emptied by a change of world size is refilled by the
            # data pass; this guards runs driven without it): the epoch trains without targets.
            return
        index = all_gather_cat(self.bank_index, self.group)
        assignments = torch.full_like(self.assignments, UNASSIGNED)
        for j, k in enumerate(self.num_prototypes):
            x = self.bank[j % len(self.crops_for_assign)][filled]
            generator = torch.Generator().manual_seed(1000 * epoch + j)
            centroids = init_centroids(x, k, generator, self.group)
            centroids, local = spherical_kmeans(x, centroids, self.kmeans_iterations, self.group)
            self.prototypes(j).copy_(centroids)
            padded = torch.full_like(self.bank_index, UNASSIGNED)
            padded[filled] = local
            gathered = all_gather_cat(padded, self.group)
            known = index != UNASSIGNED
            assignments[j, index[known]] = gathered[known]
        self.assignments.copy_(assignments)
        log.debug("DeepCluster-v2: clustered %d samples at epoch %d", int(filled.sum()), epoch)
