"""Optimizer construction from config: parameter groups, linear LR scaling, the schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from sslframe.distributed.collectives import local_shard
from sslframe.optim.lars import LARS
from sslframe.optim.schedules import SCHEDULES, cosine_weight_decay
from sslframe.registry import Registry

OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], Any], torch.optim.Optimizer]] = Registry(
    "optimizer", choices="optimizers"
)


def _sharded(groups: list[dict[str, Any]]) -> bool:
    """FSDP2's parameters are DTensors, for which PyTorch has no fused SGD kernel."""
    return any(local_shard(p) is not p for group in groups for p in group["params"])


# SGD and AdamW use PyTorch's fused kernels (one pass over all parameters, on CPU and CUDA), which
# also take the step's skip flag as a device tensor (see ``step_unless``): no host read per step.
@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    if _sharded(groups):
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True)
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=True)
    if cfg.momentum != 0:
        # Fused SGD leaves the buffers of a skipped first step uninitialised (torch.empty_like);
        # zeros give the same first update (buffer = 0 * momentum + gradient) and stay defined.
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


@OPTIMIZERS.register("lars")
def _lars(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()``, made a no-op on the device where ``skip`` (a float tensor, 0 or 1)
    is 1: parameters and optimizer state stay exactly as they were, and the host never reads
    ``skip``. Optimizers that take a skip flag (``_step_supports_amp_scaling``: PyTorch's fused
    SGD/Adam/AdamW and our LARS) get it as ``found_inf``, the attribute GradScaler sets; any other
    optimizer is stepped after one host read of the flag."""
    fused = all(group.get("fused", True) is not False for group in optimizer.param_groups)
    if not (getattr(optimizer, "_step_supports_amp_scaling", False) and fused):
        if not bool(skip):
            optimizer.step()
        return
    optimizer.grad_scale = None  # type: ignore[attr-defined]
    optimizer.found_inf = skip.reshape(())  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf  # type: ignore[attr-defined]


def is_bias_or_norm(name: str, param: nn.Parameter) -> bool:
    """Biases and the affine parameters of normalisation layers (all 1-D tensors)."""
    return param.ndim <= 1 or name.endswith(".bias")


def trunk_layer_ids(trunk: nn.Module) -> tuple[dict[str, int], int]:
    """Layer id of every trunk parameter name (0: before the blocks, such as the patch embedding
    and the tokens; i + 1: block i; L = blocks + 1: after them) and L."""
    blocks = trunk.blocks()  # type: ignore[operator]
    owner = {id(p): i + 1 for i, block in enumerate(blocks) for p in block.parameters()}
    num_layers = len(blocks) + 1
    ids: dict[str, int] = {}
    seen_block = False
    for name, param in trunk.named_parameters():
        if id(param) in owner:
            ids[name] = owner[id(param)]
            seen_block = True
        else:
            ids[name] = num_layers if seen_block else 0
    return ids, num_layers


def lr_scales(model: nn.Module, layer_decay: float, patch_embed_lr_factor: float) -> dict[str, float]:
    """Per-parameter learning-rate factors of the model's ``trunk``: ``layer_decay ** (L - id)``
    (layer-wise decay: the first layers learn slowest; BEiT, Bao et al. 2022; DINOv2's
    ``layerwise_decay``), and the patch embedding's further times ``patch_embed_lr_factor``
    (DINOv2's ``patch_embed_lr_mult``). Heads and the rest keep 1."""
    trunk = getattr(model, "trunk", None)
    if trunk is None or (layer_decay == 1.0 and patch_embed_lr_factor == 1.0):
        return {}
    ids, num_layers = trunk_layer_ids(trunk)
    scales = {f"trunk.{name}": layer_decay ** (num_layers - i) for name, i in ids.items()}
    for name in scales:
        if name.startswith("trunk.patch_embed."):
            scales[name] *= patch_embed_lr_factor
    return scales


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    exclude_bias_and_norm: bool,
    bias_lr_factor: float = 1.0,
    layer_decay: float = 1.0,
    patch_embed_lr_factor: float = 1.0,
) -> list[dict[str, Any]]:
    """Regular weights, and biases/norm parameters (no decay, no LARS adaptation, learning rate
    scaled by ``bias_lr_factor``), each split further by the trunk's per-layer learning-rate
    factors (``lr_scales``) when those are on. ``lr_scale`` multiplies the scheduled rate. The
    parameters a method names in ``constant_lr_prefixes`` go to groups marked ``constant_lr``,
    whose rate stays at the peak (``set_lr`` leaves them)."""
    scales = lr_scales(model, layer_decay, patch_embed_lr_factor)
    constant_prefixes = model.constant_lr_prefixes() if hasattr(model, "constant_lr_prefixes") else ()
    groups: dict[tuple[bool, float, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        excluded = exclude_bias_and_norm and is_bias_or_norm(name, param)
        scale = scales.get(name, 1.0) * (bias_lr_factor if excluded else 1.0)
        constant = name.startswith(constant_prefixes)
        key = (excluded, scale, constant)
        if key not in groups:
            # ``decayed`` marks the groups a weight-decay schedule drives (``set_weight_decay``).
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if excluded else weight_decay,
                "lars_exclude": excluded,
                "decayed": not excluded,
                "lr_scale": scale,
                "constant_lr": constant,
            }
        groups[key]["params"].append(param)
    # Regular weights first (the order of the groups when no per-layer factors are on).
    return sorted(groups.values(), key=lambda g: (g["constant_lr"], g["lars_exclude"], -g["lr_scale"]))


def scaled_lr(cfg: Any, global_batch: int) -> float:
    """Linear scaling rule: ``lr * global_batch / base_batch_size`` (Goyal et al. 2017)."""
    return cfg.lr * global_batch / cfg.base_batch_size if cfg.base_batch_size > 0 else cfg.lr


def build_optimizer(model: nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
    """SGD and AdamW apply weight decay through the group's ``weight_decay`` (decoupled for AdamW)."""
    groups = parameter_groups(
        model, cfg.weight_decay, cfg.exclude_bias_and_norm, cfg.get("bias_lr_factor", 1.0),
        cfg.get("layer_decay", 1.0), cfg.get("patch_embed_lr_factor", 1.0),
    )  # fmt: skip
    optimizer = OPTIMIZERS.get(cfg.name)(groups, cfg)
    # ``lr`` is the peak: where the constant groups stay.
    set_lr(optimizer, lr, constant_too=True)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float, constant_too: bool = False) -> None:
    """The scheduled rate, times each group's ``lr_scale``; groups marked ``constant_lr`` keep
    theirs unless ``constant_too``."""
    for group in optimizer.param_groups:
        if constant_too or not group.get("constant_lr", False):
            group["lr"] = lr * group.get("lr_scale", 1.0)


def build_schedule(cfg: Any, peak_lr: float, total_steps: int, steps_per_epoch: int) -> np.ndarray:
    warmup = int(cfg.warmup_steps + round(cfg.warmup_epochs * steps_per_epoch))
    return SCHEDULES.get(cfg.name)(peak_lr, total_steps, warmup, cfg.warmup_start_factor, cfg.final_factor)


def build_weight_decay_schedule(optim_cfg: Any, schedule_cfg: Any, total_steps: int) -> np.ndarray | None:
    """Per-step weight decay from ``optim.weight_decay`` to ``schedule.final_weight_decay`` (cosine),
    or ``None`` when the latter is unset and the decay stays constant."""
    final = schedule_cfg.get("final_weight_decay")
    if final is None:
        return None
    return cosine_weight_decay(optim_cfg.weight_decay, final, total_steps)


def set_weight_decay(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set the weight decay of the decayed parameter groups (biases and norms keep none)."""
    for group in optimizer.param_groups:
        if group.get("decayed", False):
            group["weight_decay"] = value


def build_schedules(cfg: Any, peak_lr: float, total_steps: int, steps_per_epoch: int) -> tuple[Any, Any]:
    """The per-iteration learning-rate schedule and weight-decay schedule (None when constant)."""
    lr = build_schedule(cfg.schedule, peak_lr, total_steps, steps_per_epoch)
    return lr, build_weight_decay_schedule(cfg.optim, cfg.schedule, total_steps)
