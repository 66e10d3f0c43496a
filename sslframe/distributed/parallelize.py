"""Scale as a strategy (docs/architecture.md, principle 3): functions applied to a plain, unwrapped method.

``plan_parallelism`` decides, once, how the model runs (precision, whether it is sharded, the
memory layout; principle 9) and the loop reads that plan; ``parallelize`` applies it. Order:
memory layout, SyncBatchNorm, activation checkpointing per trunk block, the trunk's
micro-batches (``trainer.accumulate``), torch.compile per block, then the data-parallel
strategy. Checkpointing (``torch.distributed._composable.checkpoint``), micro-batches,
compilation (``Module.compile``) and FSDP2 (``fully_shard``) act in place and keep parameter
names, so configs and checkpoints never see wrapper-specific names. The model is any module with
a ``trunk`` exposing ``blocks()`` (and optionally a ``head``): this layer knows no method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sslframe.distributed.device import resolve_precision
from sslframe.distributed.env import DistEnv
from sslframe.distributed.micro_batches import split_trunk_batches
from sslframe.errors import UserError

log = logging.getLogger(__name__)

PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ParallelPlan:
    """How the model runs, decided in one place (``plan_parallelism``) and read by the loop."""

    # fp32, bf16 or fp16: trainer.precision with ``auto`` resolved for this device.
    precision: str
    # FSDP2 over more than one process (its mixed-precision policy then casts the parameters).
    sharded: bool
    # Of the inputs, and of the parameters unless sharded (FSDP2 shards contiguous ones only).
    memory_format: torch.memory_format

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for ``torch.autocast`` around the forward: None in float32 and under FSDP."""
        return None if self.sharded else PRECISION_DTYPES[self.precision]

    def grad_scaler(self) -> Any:
        """fp16's gradient scaler (FSDP2's sharded one when sharded); None in other precisions."""
        if self.precision != "fp16":
            return None
        if self.sharded:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            return ShardedGradScaler()
        return torch.amp.GradScaler("cuda")


def plan_parallelism(cfg: Any, env: DistEnv, device: torch.device, trunk: nn.Module) -> ParallelPlan:
    """Precision (``auto``: bf16 where the hardware runs it natively), sharding and memory layout
    (channels-last where ``trunk.channels_last_devices`` says the trunk gains from it)."""
    precision = resolve_precision(cfg.trainer.precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise UserError("trainer.precision=fp16 needs CUDA (use bf16 or fp32 on the CPU)")
    sharded = cfg.distributed.strategy == "fsdp" and env.world_size > 1
    channels_last = cfg.trainer.channels_last and device.type in getattr(trunk, "channels_last_devices", ())
    return ParallelPlan(precision, sharded, torch.channels_last if channels_last else torch.contiguous_format)


def apply_sync_bn(method: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        raise UserError("model.sync_bn=true needs CUDA (SyncBatchNorm runs on NCCL); use it on GPUs only")
    return nn.SyncBatchNorm.convert_sync_batchnorm(method)


def apply_activation_checkpointing(method: nn.Module) -> None:
    """Recompute each trunk block's activations in the backward pass instead of storing them."""
    from torch.distributed._composable import checkpoint

    for block in method.trunk.blocks():
        checkpoint(block)


def apply_compile(method: nn.Module) -> None:
    """Compile each trunk block (small graphs compile fast and are reused across blocks)."""
    for block in method.trunk.blocks():
        block.compile()


def apply_fsdp(method: nn.Module, precision: str, reshard_after_forward: bool) -> None:
    """FSDP2: shard each trunk block and the projection head as their own units, the rest
    (stem, prototypes, predictors) with the root. Parameters are cast to the training
    precision for compute; gradients are reduced in float32.

    Batch norms are units of their own that stay in float32 (their running statistics are
    float32 buffers, which batch norm cannot mix with bf16 weights), taking the block's
    activations in float32 and handing theirs back in the training precision, as VISSL's
    ``auto_wrap_bn`` did for SEER."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    compute = PRECISION_DTYPES[precision]
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
    if compute is not None:
        norm_policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, output_dtype=compute)
        for module in method.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(True for _ in module.parameters()):
                fully_shard(module, reshard_after_forward=reshard_after_forward, mp_policy=norm_policy)
    for block in method.trunk.blocks():
        fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    head = getattr(method, "head", None)
    if isinstance(head, nn.Module):
        fully_shard(head, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(method, reshard_after_forward=reshard_after_forward, mp_policy=policy)


def unbroadcast_buffer_names(method: nn.Module) -> list[str]:
    """Buffers DDP must not overwrite with rank 0's copy before each forward: everything but
    batch-norm statistics. Methods' state is either per rank (SwAV's queue, a memory bank of this
    rank's samples) or kept identical by the method itself (MoCo's queue from gathered keys,
    DINO's all-reduced centre), so broadcasting it would be wrong or a wasted copy per step."""
    norm_buffers = {
        id(buf)
        for module in method.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for buf in module.buffers(recurse=False)
    }
    return [name for name, buf in method.named_buffers() if id(buf) not in norm_buffers]


def parallelize(
    method: nn.Module, cfg: Any, env: DistEnv, device: torch.device, plan: ParallelPlan | None = None
) -> nn.Module:
    """Apply ``plan`` (decided here when not given) and return the module the loop calls (the
    method itself, or its DDP wrapper)."""
    plan = plan or plan_parallelism(cfg, env, device, method.trunk)
    dist_cfg = cfg.distributed
    if not plan.sharded:
        method.to(memory_format=plan.memory_format)
    if cfg.model.sync_bn:
        method = apply_sync_bn(method, device)
    if dist_cfg.activation_checkpointing:
        apply_activation_checkpointing(method)
    if cfg.trainer.get("accumulate", 1) > 1:
        split_trunk_batches(method.trunk, cfg.trainer.accumulate)
    if cfg.trainer.compile:
        apply_compile(method)
    strategy = dist_cfg.strategy
    if strategy == "fairscale_fsdp":
        # Checked with fairscale 0.4.13 (its last release) and torch 2.14: it imports, but its
        # FullyShardedDataParallel allocates its gathered buffers on CUDA even for CPU modules.
        raise UserError(
            "distributed.strategy=fairscale_fsdp is not supported: fairscale 0.4.13 (last released 2022) "
            "allocates its FSDP buffers on CUDA, so it cannot run on CPU, and sslframe does not wrap it on GPUs; "
            "use distributed.strategy=fsdp (PyTorch's FSDP2), which shards the same way"
        )
    if strategy == "fsdp":
        if env.world_size == 1:
            log.info("distributed.strategy=fsdp with one process: nothing to shard, running unsharded")
            return method
        apply_fsdp(method, plan.precision, dist_cfg.reshard_after_forward)
        return method
    if strategy == "ddp" and env.world_size > 1:
        # DDP broadcasts rank 0's buffers before every forward: batch-norm statistics only.
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            method, unbroadcast_buffer_names(method)
        )
        # Gradients live in the all-reduce buckets (no second copy of every gradient).
        # One device per process: the current one ("cuda" alone has no index).
        device_ids = (
            [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
        )
        return nn.parallel.DistributedDataParallel(method, device_ids=device_ids, gradient_as_bucket_view=True)
    return method
