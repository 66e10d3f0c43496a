"""Capacity plan of a training config: will it fit on the GPUs, and how long will it take?

The model is built on the ``meta`` device (no memory), so a 10B-parameter trunk is planned on a
laptop. Counts and activation bytes are measured on the real modules (``measure.py``); the
rest is bookkeeping of what each strategy keeps per GPU:

- Frozen copies a method keeps (EMA teacher, momentum encoder) count as parameters only.
- DDP: fp32 parameters, fp32 gradients (the all-reduce buckets hold them: gradient_as_bucket_view),
  optimizer state; under bf16/fp16 autocast also the cast copy of every weight that autocast
  caches for the forward pass.
- FSDP (FSDP2, ``fully_shard`` per trunk block and per head): parameters, gradients and
  optimizer state divided by the world size, plus the unsharded working set: the current and
  the prefetched unit's parameters in the compute dtype, and the current unit's unsharded
  fp32 gradients before their reduce-scatter.
- Activations: bytes autograd saves, for the per-GPU batch and all crops, in the compute dtype;
  with activation checkpointing, only block inputs plus one block recomputed at a time.
- A fixed overhead (``plan.overhead_gb``: CUDA context, communication buffers, allocator slack),
  and a headroom fraction kept free (``plan.headroom``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from sslframe.methods import build_method
from sslframe.planner.measure import count_parameters, measure_step, trunk_forward_flops

GB = 1024**3
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Optimizer state tensors per parameter (fp32): momentum for SGD/LARS, two moments for AdamW.
OPTIMIZER_SLOTS = {"sgd": 1, "lars": 1, "adamw": 2}


@dataclass
class Scenario:
    strategy: str
    activation_checkpointing: bool
    parameters: float
    gradients: float
    optimizer: float
    working_set: float
    activations: float
    overhead: float

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.working_set + self.activations + self.overhead

    def as_dict(self, usable: float) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "activation_checkpointing": self.activation_checkpointing,
            "gb": {
                "parameters": self.parameters / GB,
                "gradients": self.gradients / GB,
                "optimizer": self.optimizer / GB,
                "working_set": self.working_set / GB,
                "activations": self.activations / GB,
                "overhead": self.overhead / GB,
                "total": self.total / GB,
            },
            "fits": self.total <= usable,
        }


def crop_sizes(transform: Any) -> list[int]:
    return [transform.global_size] * transform.global_crops + [transform.local_size] * transform.local_crops


def make_plan(cfg: DictConfig) -> dict[str, Any]:
    """The plan as a JSON-ready dict (see the module docstring for the memory model)."""
    plan = cfg.plan
    world = cfg.launcher.nodes * cfg.launcher.gpus_per_node
    batch = cfg.data.batch_size
    # GPUs plan with bf16 where the run says auto (every GPU of the SEER era but V100 has it).
    precision = "bf16" if cfg.trainer.precision == "auto" else cfg.trainer.precision
    dtype = COMPUTE_DTYPES[precision]
    compute_bytes = torch.tensor([], dtype=dtype).element_size()
    slots = OPTIMIZER_SLOTS[cfg.optim.name] if (cfg.optim.name == "adamw" or cfg.optim.momentum > 0) else 0

    with torch.device("meta"):
        torch.manual_seed(0)
        method = build_method(cfg).to(dtype)
    params = count_parameters(method)
    sizes = crop_sizes(cfg.transform)
    step = measure_step(method, sizes, batch, dtype)
    per_resolution = {str(s): trunk_forward_flops(method.trunk, s, dtype) for s in sorted(set(sizes), reverse=True)}

    p, unit, frozen = params.total, params.largest_unit, params.frozen
    overhead = plan.overhead_gb * GB
    activations = {False: step.activation_bytes * batch, True: step.checkpointed_bytes() * batch}
    autocast_cache = p * compute_bytes if precision != "fp32" else 0.0
    scenarios = []
    for ac in (False, True):
        weights = 4 * (p + frozen)
        scenarios.append(Scenario("ddp", ac, weights, 4 * p, 4 * slots * p, autocast_cache, activations[ac], overhead))
        working = 2 * unit * compute_bytes + 4 * unit
        scenarios.append(
            Scenario(
                "fsdp", ac, weights / world, 4 * p / world, 4 * slots * p / world, working, activations[ac], overhead
            )
        )
    usable = plan.gpu_memory_gb * GB * (1 - plan.headroom)

    step_flops = step.train_flops * batch * world
    rate = world * plan.peak_tflops * 1e12 * plan.mfu / step.train_flops
    chosen_strategy = "fsdp" if cfg.distributed.strategy == "fsdp" else "ddp"
    chosen = next(
        s
        for s in scenarios
        if s.strategy == chosen_strategy and s.activation_checkpointing == cfg.distributed.activation_checkpointing
    )
    images = plan.images
    return {
        "config": {
            "trunk": dict(cfg.trunk),
            "method": cfg.method.name,
            "crops": sizes,
            "batch_per_gpu": batch,
            "gpus": world,
            "global_batch": batch * world,
            "precision": precision,
            "optimizer": cfg.optim.name,
            "strategy": cfg.distributed.strategy,
            "activation_checkpointing": cfg.distributed.activation_checkpointing,
        },
        "parameters": {
            "trunk": params.trunk,
            "heads": params.heads,
            "total": params.total,
            "frozen": params.frozen,
            "largest_fsdp_unit": params.largest_unit,
            "trunk_blocks": params.blocks,
        },
        "flops": {
            "trunk_forward_per_image": per_resolution,
            "train_per_image": step.train_flops,
            "train_per_step": step_flops,
            "activation_checkpointing_extra_per_image": sum(
                per_resolution[str(s)] for s in sizes if str(s) in per_resolution
            ),
        },
        "activations_per_image_gb": {
            "plain": step.activation_bytes / GB,
            "checkpointed": step.checkpointed_bytes() / GB,
        },
        "memory_per_gpu": [s.as_dict(usable) for s in scenarios],
        "gpu": {
            "memory_gb": plan.gpu_memory_gb,
            "usable_gb": usable / GB,
            "headroom": plan.headroom,
            "peak_tflops": plan.peak_tflops,
            "mfu": plan.mfu,
        },
        "chosen": {**chosen.as_dict(usable)},
        "throughput": {
            "images_per_sec": rate,
            "steps_per_sec": rate / (batch * world),
            "images": images,
            "hours": images / rate / 3600 if images > 0 else None,
        },
        "method_notes": [
            "parameters and FLOPs counted on the meta device (torch.utils.flop_counter, 2 FLOPs per multiply-add)",
            "activations: bytes autograd saves in the method's own training step, measured on meta at the "
            f"per-GPU batch in {precision}",
            "images/s = GPUs x peak TFLOPs x MFU / model FLOPs per image (recomputation not counted as model FLOPs)",
        ],
    }


def _flops(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value:,.0f}"


def summary(report: dict[str, Any]) -> str:
    """A few console lines: parameters, FLOPs, memory per scenario, verdict and time."""
    cfg, params, flops, thr = report["config"], report["parameters"], report["flops"], report["throughput"]
    lines = [
        f"model: {params['total'] / 1e6:,.1f}M parameters (trunk {params['trunk'] / 1e6:,.1f}M, "
        f"heads {params['heads'] / 1e6:,.1f}M, frozen copies {params['frozen'] / 1e6:,.1f}M); "
        f"crops {cfg['crops']}; {cfg['batch_per_gpu']} images per GPU "
        f"x {cfg['gpus']} GPUs = {cfg['global_batch']}; {cfg['precision']}",
        "FLOPs: trunk forward per image "
        + ", ".join(f"{s}px {_flops(v)}" for s, v in flops["trunk_forward_per_image"].items())
        + f"; training per image {_flops(flops['train_per_image'])}, per step {_flops(flops['train_per_step'])}",
        f"memory per GPU (usable {report['gpu']['usable_gb']:.1f} of {report['gpu']['memory_gb']:.0f} GB; "
        "activations measured as the bytes autograd saves in the training step, run on the meta device):",
    ]
    for s in report["memory_per_gpu"]:
        gb = s["gb"]
        tag = f"{s['strategy']}{' + act. ckpt' if s['activation_checkpointing'] else ''}"
        lines.append(
            f"  {tag:<20} {gb['total']:8.1f} GB  (params {gb['parameters']:.1f}, grads {gb['gradients']:.1f}, "
            f"optim {gb['optimizer']:.1f}, working {gb['working_set']:.1f}, activations {gb['activations']:.1f}, "
            f"overhead {gb['overhead']:.1f})  {'fits' if s['fits'] else 'DOES NOT FIT'}"
        )
    chosen = report["chosen"]
    verdict = "fits" if chosen["fits"] else "does NOT fit"
    how = chosen["strategy"] + (", activation checkpointing" if chosen["activation_checkpointing"] else "")
    lines.append(f"this config ({how}) {verdict}: {chosen['gb']['total']:.1f} GB per GPU")
    time = f", {thr['hours']:,.1f} h for {thr['images']:,} images" if thr["hours"] is not None else ""
    lines.append(
        f"at MFU {report['gpu']['mfu']:.0%} of {report['gpu']['peak_tflops']:g} TFLOPs: "
        f"{thr['images_per_sec']:,.0f} images/s{time}"
    )
    return "\n".join(lines)
