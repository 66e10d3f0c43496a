"""Collectives that degrade to identities when no process group is running.

Losses take an optional ``group``; with ``None`` (or no initialised process group) they see
only the local batch, which is exactly the single-process case.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup


def active(group: ProcessGroup | None) -> bool:
    return group is not None and dist.is_available() and dist.is_initialized()


def world_size(group: ProcessGroup | None) -> int:
    return dist.get_world_size(group) if active(group) else 1


def rank(group: ProcessGroup | None) -> int:
    return dist.get_rank(group) if active(group) else 0


def barrier() -> None:
    """Wait for every rank of the default group; nothing to wait for in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of an FSDP2 (DTensor) tensor; any other tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def all_reduce_sum(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """In-place sum over ranks, no gradient (used inside no-grad algorithms like Sinkhorn)."""
    if active(group):
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def all_reduce_max(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    if active(group):
        dist.all_reduce(x, op=dist.ReduceOp.MAX, group=group)
    return x


def sum_over_ranks(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """Sum of ``x`` over the ranks of ``group``, differentiable: the backward pass sums the
    gradients of every rank, so a loss every rank computes identically from the sum gets
    ``world_size`` times its gradient on each rank, which DDP's gradient mean divides back."""
    if not active(group):
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, group=group)


def gather_with_grad(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; gradients flow back to each owner."""
    if not active(group):
        return x
    import torch.distributed._functional_collectives as funcol

    # Autograd-aware all-gather: the backward pass sums each rank's gradient into the owner's.
    return funcol.wait_tensor(funcol.all_gather_single(x.contiguous(), 0, group))


def all_gather_cat(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """``x`` of every rank concatenated along dim 0, without autograd (for indices and other
    integer or bookkeeping tensors, which have no gradient to carry)."""
    if not active(group):
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts)
