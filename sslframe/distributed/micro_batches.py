"""Gradient accumulation that leaves every loss exact: ``trainer.accumulate=N``.

Each rank's batch (``data.batch_size``) still reaches the method's loss whole; only the trunk, which
holds nearly all of a step's activation memory, runs in N micro-batches. A micro-batch's forward
keeps no activations (non-reentrant ``torch.utils.checkpoint``) and is recomputed on its own when
the backward pass reaches it, so the peak activation memory is the trunk's on batch/N plus the
heads' on the whole batch, and the price is one more trunk forward per step. Losses coupled across
the batch (negatives, Sinkhorn, cross-correlation, centring, queues) see the same embeddings, and
give the same gradients, as without accumulation: the effect of GradCache (Gao et al. 2021,
*Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup*), which caches the
embeddings' gradients, reached here by recomputation for every method at once.

What differs from one pass over the whole batch: batch norm inside the trunk normalises each
micro-batch with its own statistics (as each GPU does under DDP without SyncBatchNorm). Its running
statistics move once per step, by the mean of the micro-batches' statistics, and the recomputation
in backward leaves them alone. Trunks without batch norm (ViTs: layer norm) give the same gradients
as without accumulation, up to float rounding.

Only forwards that build a graph are split: teachers, momentum encoders and evaluation run under
``no_grad`` and see the whole batch at once.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sslframe.errors import UserError

# The trunk entry points that take a batch first: ``forward`` for every trunk, ``encode`` for
# ViTs (MAE's and I-JEPA's encoders call it with patch indices per sample).
ENTRY_POINTS = ("forward", "encode")


def running_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def snapshot(norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> list[tuple[torch.Tensor, ...]]:
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]


def restore(norms: Sequence[nn.modules.batchnorm._BatchNorm], saved: Sequence[tuple[torch.Tensor, ...]]) -> None:
    with torch.no_grad():
        for m, (mean, var, count) in zip(norms, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)


@contextmanager
def frozen_statistics(norms: Sequence[nn.modules.batchnorm._BatchNorm]):
    """Running statistics as they were on entry, whatever ran inside (the recomputation)."""
    saved = snapshot(norms)
    try:
        yield
    finally:
        restore(norms, saved)


def split_like(value: Any, batch: int, chunks: int) -> Any:
    """``value`` split into ``chunks`` along dim 0 when it is a tensor with the batch's rows,
    otherwise the same value for every chunk."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return torch.tensor_split(value, chunks)
    return [value] * chunks


def concat(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, (tuple, list)):
        return type(first)(concat([o[i] for o in outputs]) for i in range(len(first)))
    raise TypeError(f"trainer.accumulate: cannot join trunk outputs of type {type(first).__name__}")


def _split_call(trunk: nn.Module, name: str, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    entry: Callable[..., Any] = getattr(type(trunk), name)
    chunks = min(trunk._micro_batches, x.shape[0]) if x.dim() > 0 else 1
    if trunk._micro_batch_depth > 0 or chunks < 2 or not torch.is_grad_enabled():
        return entry(trunk, x, *args, **kwargs)

    def run(*inputs: Any) -> Any:
        # Inner entry points (forward calls encode) run whole inside a micro-batch.
        trunk._micro_batch_depth += 1
        try:
            return entry(trunk, *inputs[: len(args) + 1], **dict(zip(kwargs, inputs[len(args) + 1 :], strict=True)))
        finally:
            trunk._micro_batch_depth -= 1

    norms = trunk._micro_batch_norms if trunk.training else []
    pieces = [split_like(v, x.shape[0], chunks) for v in (x, *args, *kwargs.values())]
    before = snapshot(norms)
    moved: list[list[tuple[torch.Tensor, ...]]] = []
    outputs = []
    for i in range(chunks):
        outputs.append(
            checkpoint(
                run,
                *(p[i] for p in pieces),
                use_reentrant=False,
                context_fn=lambda: (nullcontext(), frozen_statistics(norms)),
            )
        )
        if norms:
            moved.append(snapshot(norms))
            restore(norms, before)
    if norms:
        # One update by the mean of the micro-batches' statistics, counted once.
        with torch.no_grad():
            for j, m in enumerate(norms):
                m.running_mean.copy_(torch.stack([s[j][0] for s in moved]).mean(0))
                m.running_var.copy_(torch.stack([s[j][1] for s in moved]).mean(0))
                m.num_batches_tracked.copy_(before[j][2] + 1)
    return concat(outputs)


def split_trunk_batches(trunk: nn.Module, chunks: int) -> None:
    """Run ``trunk``'s forwards that build a graph in ``chunks`` micro-batches, recomputed in
    backward (module docstring). Acts in place and keeps parameter names; the entry points are
    bound methods, so a deep copy of the trunk (an EMA teacher) splits its own batches."""
    if chunks < 1:
        raise UserError(f"trainer.accumulate must be 1 or more, got {chunks}")
    trunk._micro_batches = chunks
    trunk._micro_batch_depth = 0
    trunk._micro_batch_norms = running_norms(trunk)
    for name in ENTRY_POINTS:
        if hasattr(type(trunk), name):

            def call(self: nn.Module, *args: Any, _name: str = name, **kwargs: Any) -> Any:
                return _split_call(self, _name, *args, **kwargs)

            setattr(trunk, name, types.MethodType(call, trunk))
