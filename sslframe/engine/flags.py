"""Per-step flags read by the host later than the step that made them.

Every step the loop needs four numbers summed over all ranks: whether the loss was non-finite,
whether a stop signal arrived, and how many samples were unreadable out of how many. They are
all-reduced on the device; the update's skip is decided there too (``step_unless``), so nothing
in the step waits for the host. The host reads the numbers one step later, from a pinned copy
whose transfer has long finished by then (or at once at logging and checkpoint steps, where
the loop synchronises anyway). Every rank reads the same numbers at the same step, so they all
stop, and count, alike.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import all_reduce_max, local_shard
from sslframe.errors import UserError

log = logging.getLogger(__name__)


class StepFlags(NamedTuple):
    step: int
    nonfinite: bool
    stop: bool
    bad: int
    seen: int


def local_flags(
    loss: torch.Tensor, grads: list[torch.Tensor], stop: bool, bad: int, seen: int, device: torch.device
) -> torch.Tensor:
    """This rank's ``[non-finite loss or gradient, stop signal, unreadable samples, samples]``
    (float64, on the device), built without a synchronous host-to-device copy. ``grads`` are
    checked too: a finite loss can still leave a NaN or infinite gradient (an overflow in a bf16
    backward), and the update must then be skipped like any other."""
    host = torch.tensor([0.0, float(stop), float(bad), float(seen)], dtype=torch.float64)
    if device.type == "cuda":
        host = host.pin_memory()
    flags = host.to(device, non_blocking=True)
    finite = torch.isfinite(loss.detach().float()).reshape(())
    if grads:
        # FSDP's gradients are sharded: each rank checks its own shards (the flags are summed).
        norms = torch._foreach_norm([local_shard(g).detach() for g in grads])
        finite = finite & torch.isfinite(torch.stack([n.float() for n in norms]).sum())
    flags[0] = (~finite).to(torch.float64)
    return flags


class FlagQueue:
    """Device flags in, host values out, in step order."""

    def __init__(self) -> None:
        self.pending: deque[tuple[int, torch.Tensor, torch.cuda.Event | None]] = deque()

    def put(self, step: int, flags: torch.Tensor) -> None:
        event = None
        if flags.device.type == "cuda":
            host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = flags.detach().clone()
        self.pending.append((step, host, event))

    def take(self, keep_newest: bool = False) -> list[StepFlags]:
        """The flags of every pending step, oldest first (all but the newest with ``keep_newest``)."""
        out = []
        while len(self.pending) > (1 if keep_newest else 0):
            step, host, event = self.pending.popleft()
            if event is not None:
                event.synchronize()
            nonfinite, stop, bad, seen = host.tolist()
            out.append(StepFlags(step, nonfinite > 0, stop > 0, int(bad), int(seen)))
        return out


class NormStatistics:
    """Batch-norm running statistics, which a skipped step must leave as they were: the forward
    updates them before the skip is known (after backward), so they are saved before it and put
    back, on the device, where the step turns out skipped."""

    def __init__(self, model: torch.nn.Module) -> None:
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.buffers = [
            b for m in norms for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None
        ]
        self.saved = [torch.empty_like(b) for b in self.buffers]

    def save(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)

    def restore_where(self, skip: torch.Tensor) -> None:
        """Where ``skip`` (0-d, 0 or 1) is 1, the statistics saved before the forward come back."""
        if self.buffers:
            skipped = skip.reshape(()).to(self.buffers[0].device) > 0
            for buffer, saved in zip(self.buffers, self.saved, strict=True):
                buffer.copy_(torch.where(skipped, saved, buffer))


class StepCounters:
    """What the host learns from the step flags as it reads them: skipped steps, and unreadable
    and seen samples over all ranks. Past ``max_bad_fraction`` (judged from 100 samples on) the
    run stops, on every rank at the same step (every rank reads the same summed flags)."""

    def __init__(self, max_bad_fraction: float, data_path: str) -> None:
        self.max_bad_fraction = max_bad_fraction
        self.data_path = data_path
        self.skipped_steps = 0
        self.bad_samples = 0
        self.seen_samples = 0

    def apply(self, taken: list[StepFlags]) -> bool:
        """Count the flags of the steps just read; True if any rank received a stop request."""
        stop = False
        for flags in taken:
            if flags.nonfinite:
                self.skipped_steps += 1
                log.warning(
                    "non-finite loss or gradient at step %d: update skipped (%d so far)", flags.step, self.skipped_steps
                )
            self.bad_samples += flags.bad
            self.seen_samples += flags.seen
            limit = self.max_bad_fraction
            if self.seen_samples >= 100 and self.bad_samples > limit * self.seen_samples:
                raise UserError(
                    f"{self.bad_samples} of {self.seen_samples} samples were unreadable, more than "
                    f"data.max_bad_fraction={limit}; check the dataset at '{self.data_path}'"
                )
            stop = stop or flags.stop
        return stop

    def state_dict(self) -> dict[str, int]:
        return {"bad_samples": self.bad_samples, "seen_samples": self.seen_samples}

    def load_state_dict(self, state: dict[str, int] | None, device: torch.device, group: ProcessGroup | None) -> None:
        """Restore the sample counts. They are global (every rank holds the same); a rank without
        state of its own (``None``: resumed at a larger world size) takes them from the others."""
        if state is not None:
            self.bad_samples, self.seen_samples = int(state["bad_samples"]), int(state["seen_samples"])
        counts = torch.tensor([float(self.bad_samples), float(self.seen_samples)], dtype=torch.float64)
        counts = all_reduce_max(counts.to(device), group)
        self.bad_samples, self.seen_samples = (int(v) for v in counts.tolist())


def dump_nonfinite_step(path: Path, step: int, epoch: int, crops: list[torch.Tensor], labels: Any, loss: torch.Tensor,
                        model: torch.nn.Module, rng: dict[str, Any]) -> None:  # fmt: skip
    """``trainer.on_nan=stop``: the step's inputs and this rank's state in ``path``, then a stop."""
    torch.save(
        {
            "step": step,
            "epoch": epoch,
            "loss": loss.detach().cpu(),
            "crops": [c.detach().cpu() for c in crops],
            "labels": labels,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "rng": rng,
        },
        path,
    )
    raise UserError(
        f"non-finite loss or gradient at step {step} (trainer.on_nan=stop); the step's inputs and state "
        f"are in {path.parent}/{path.name.rsplit('_rank_', 1)[0]}_rank_*.pt; the last checkpoint is untouched"
    )
