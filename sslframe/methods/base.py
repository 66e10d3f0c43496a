"""The contract between a method and the training loop (docs/architecture.md, principle 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributed import ProcessGroup

from sslframe.models.trunks import Trunk
from sslframe.registry import Registry

# ``method.name`` -> the method class; each method file registers its class with its config schema.
METHODS: Registry[type[Method]] = Registry("method", group="method")


@dataclass
class StepContext:
    """Where the loop stands when it calls the method."""

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    # Dataset index of each sample in the batch (memory banks keyed by sample, DeepCluster-v2).
    indices: torch.Tensor | None = None
    # Set by the loop before ``after_optimizer_step``: 1 (a float tensor on the device) where the
    # step's update was skipped (non-finite loss), else 0; the host never waits for it, so
    # updates that follow the optimizer (EMA targets) are gated with it on the device.
    skipped: torch.Tensor | None = None
    # True during the pass over the data that some methods need before training
    # (``Method.needs_data_pass``): the method records what it needs and its loss is ignored.
    data_pass: bool = False


def update_unless_skipped_(state: torch.Tensor, new: torch.Tensor, skipped: torch.Tensor | None) -> None:
    """``state <- new``, except where the step was skipped (``skipped``, ``StepContext.skipped``, is
    1): decided on the device, and a non-finite ``new`` never reaches ``state`` then."""
    if skipped is None:
        state.copy_(new)
    else:
        state.copy_(torch.where(skipped.reshape(()).to(state.device) > 0, state, new.to(state.dtype)))


@dataclass
class StepOutput:
    loss: torch.Tensor
    # Extra scalars to log: tensors (read only at logging intervals) or host numbers (schedules).
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)
    # Normalised embeddings of the first view, for observers such as collapse monitors.
    embeddings: torch.Tensor | None = None


class Method(nn.Module):
    """A self-supervised method: owns its networks, its loss and its per-step state.

    The loop calls, in order, for each step: ``training_step`` (forward + loss),
    ``backward``, ``before_optimizer_step`` (e.g. freeze parameters), the optimizer step,
    then ``after_optimizer_step`` (e.g. EMA updates, prototype normalisation). Buffers hold
    any state (queues, centres) so ``state_dict`` captures it for checkpoints.

    A step is skipped when any rank's loss or gradient is non-finite, which is known only after
    backward. State that the forward computes (a centre, a queue, a memory bank) is therefore
    written in ``after_optimizer_step``, gated by ``ctx.skipped`` (``update_unless_skipped_``),
    so a skipped step leaves it as it was; the loop does the same for batch-norm statistics.
    """

    trunk: Trunk

    def __init__(self) -> None:
        super().__init__()
        self.group: ProcessGroup | None = None

    def set_process_group(self, group: ProcessGroup | None) -> None:
        """Losses reduce over this group, making them global-batch losses."""
        self.group = group

    def bind_dataset(self, num_samples: int, rank: int, world_size: int) -> None:
        """Called once before training (and before a checkpoint is loaded) with the dataset
        size, so state sized by it (a memory bank over all samples) can be allocated."""

    def needs_data_pass(self) -> bool:
        """True when the method needs one forward pass over an epoch of data before the next
        training step (DeepCluster-v2 fills its memory bank). The loop then calls the method's
        forward under ``no_grad`` for every batch of the current epoch with ``ctx.data_pass``
        set, and trains afterwards."""
        return False

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        raise NotImplementedError

    def forward(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        # Wrappers such as DDP call forward; it is the training step.
        return self.training_step(crops, ctx)

    def rank_state_dict(self) -> dict[str, torch.Tensor]:
        """State that differs between ranks (e.g. SwAV's per-rank queue); saved per rank."""
        return {}

    def load_rank_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore ``rank_state_dict``; ``None`` when the checkpoint had no state for this rank
        (resumed at a larger world size), in which case the state starts afresh."""

    def constant_lr_prefixes(self) -> tuple[str, ...]:
        """Names (prefixes of ``named_parameters``) of parameters whose learning rate stays at its
        peak, outside the schedule (SimSiam's predictor in the authors' ``--fix-pred-lr``)."""
        return ()

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Called after backward and before the optimizer step."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Called after each optimizer step."""
