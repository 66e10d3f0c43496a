"""Measurements of a model that cost no memory: parameters, FLOPs and activation bytes, taken by
running the real modules on the ``meta`` device (shapes and dtypes only, no storage).

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over a real forward and backward
  (matrix multiplications and convolutions, 2 FLOPs per multiply-add, the usual MFU convention).
- Activations: the bytes autograd saves for the backward pass, summed through
  ``torch.autograd.graph.saved_tensors_hooks`` while the trunk and heads run forward. This is
  the activation memory of a step, measured on the model's own graph rather than estimated.
  Each trunk block's share is recorded too, so activation checkpointing (which keeps only each
  block's input and recomputes one block at a time in backward) is accounted from the same data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from sslframe.methods.base import Method, StepContext


def _conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
    **_: Any,
) -> int:
    """Backward of a convolution: the input gradient and the weight gradient each take as many
    multiply-adds as the forward. (torch's own formula over-counts grouped convolutions, e.g.
    4.3x the forward instead of 2x on RegNetY-16GF.)"""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


@dataclass
class ParameterCount:
    trunk: int
    heads: int
    # The largest FSDP unit (a trunk block, or all the heads) and the trunk's block count.
    largest_unit: int
    blocks: int
    # Parameters that are not trained (EMA teachers, momentum encoders): weights only, no
    # gradients or optimizer state.
    frozen: int = 0

    @property
    def total(self) -> int:
        return self.trunk + self.heads


def count_parameters(method: Method) -> ParameterCount:
    """Parameters of the trunk and of everything else the method trains (heads, prototypes...),
    and of the frozen copies it keeps (EMA teacher, momentum encoder)."""
    trunk = sum(p.numel() for p in method.trunk.parameters())
    total = sum(p.numel() for p in method.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in method.parameters() if not p.requires_grad)
    blocks = method.trunk.blocks()
    largest_block = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    return ParameterCount(trunk, total - trunk, max(largest_block, total - trunk), len(blocks), frozen)


@dataclass
class StepCost:
    """Per image of one training step (all crops, forward and backward, the method's loss)."""

    train_flops: float
    activation_bytes: float
    # Per trunk block: bytes saved inside it, and the bytes of its inputs (what activation
    # checkpointing keeps), summed over the trunk's calls (one per crop resolution).
    block_bytes: list[float] = field(default_factory=list)
    block_input_bytes: list[float] = field(default_factory=list)

    def checkpointed_bytes(self) -> float:
        """Saved bytes with every trunk block checkpointed: the rest of the graph, each block's
        inputs, and one block's activations recomputed during its backward (the largest, over
        all its calls: an upper bound)."""
        inside = sum(self.block_bytes)
        return self.activation_bytes - inside + sum(self.block_input_bytes) + max(self.block_bytes, default=0.0)


@contextmanager
def _saved_bytes(blocks: Sequence[nn.Module]) -> Iterator[dict[str, list[float]]]:
    """Count bytes autograd saves, in all and per block, plus each block's input bytes."""
    record: dict[str, list[float]] = {
        "total": [0.0],
        "block": [0.0] * len(blocks),
        "input": [0.0] * len(blocks),
    }
    current: list[int] = []
    seen: set[object] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        # Parameters are not activations; a storage saved by several ops is held once.
        if isinstance(t, nn.Parameter):
            return t
        if t.device.type == "meta":
            key, size = id(t), t.numel() * t.element_size()
        else:
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        if key in seen:
            return t
        seen.add(key)
        record["total"][0] += size
        if current:
            record["block"][current[-1]] += size
        return t

    handles = []
    for i, block in enumerate(blocks):

        def pre(_m: nn.Module, args: tuple, i: int = i) -> None:
            current.append(i)
            record["input"][i] += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))

        def post(_m: nn.Module, _args: tuple, _out: torch.Tensor) -> None:
            current.pop()

        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield record
    finally:
        for h in handles:
            h.remove()


def trunk_forward_flops(trunk: nn.Module, size: int, dtype: torch.dtype = torch.float32) -> float:
    """Forward FLOPs of the trunk for one image of ``size`` x ``size`` pixels (run wherever the
    trunk lives; on ``meta`` it costs nothing)."""
    x = torch.zeros(2, 3, size, size, device=next(trunk.parameters()).device, dtype=dtype)
    with flop_counter() as counter, torch.no_grad():
        trunk(x)
    return counter.get_total_flops() / 2


def measure_step(method: Method, crop_sizes: Sequence[int], batch: int, dtype: torch.dtype) -> StepCost:
    """Run the method's own training step and backward on ``meta`` tensors for ``batch``
    images (each with one crop per entry of ``crop_sizes``) and return the cost per image.
    ``method`` must live on the meta device, in ``dtype`` (bf16/fp16 stand in for autocast)."""
    crops = [torch.zeros(batch, 3, s, s, device="meta", dtype=dtype) for s in crop_sizes]
    ctx = StepContext(step=0, epoch=0, steps_per_epoch=1, total_steps=1)
    with _saved_bytes(method.trunk.blocks()) as saved, flop_counter() as counter:
        out = method.training_step(crops, ctx)
        out.loss.backward()
    return StepCost(
        train_flops=counter.get_total_flops() / batch,
        activation_bytes=saved["total"][0] / batch,
        block_bytes=[b / batch for b in saved["block"]],
        block_input_bytes=[b / batch for b in saved["input"]],
    )
