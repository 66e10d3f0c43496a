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


def parameter_groups(
    model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool, bias_lr_factor: float = 1.0
) -> list[dict[str, Any]]:
    """Two groups: regular weights, and biases/norm parameters (no decay, no LARS adaptation,
    learning rate scaled by ``bias_lr_factor``). ``lr_scale`` multiplies the scheduled rate."""
    regular, excluded = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (excluded if exclude_bias_and_norm and is_bias_or_norm(name, param) else regular).append(param)
    # ``decayed`` marks the group a weight-decay schedule drives (``set_weight_decay``).
    groups = [
        {"params": regular, "weight_decay": weight_decay, "lars_exclude": False, "decayed": True, "lr_scale": 1.0}
    ]
    if excluded:
        groups.append(
            {
                "params": excluded,
                "weight_decay": 0.0,
                "lars_exclude": True,
                "decayed": False,
                "lr_scale": bias_lr_factor,
            }
        )
    return groups


def scaled_lr(cfg: Any, global_batch: int) -> float:
    """Linear scaling rule: ``lr * global_batch / base_batch_size`` (Goyal et al. 2017)."""
    return cfg.lr * global_batch / cfg.base_batch_size if cfg.base_batch_size > 0 else cfg.lr


def build_optimizer(model: nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
    """SGD and AdamW apply weight decay through the group's ``weight_decay`` (decoupled for AdamW)."""
    groups = parameter_groups(model, cfg.weight_decay, cfg.exclude_bias_and_norm, cfg.get("bias_lr_factor", 1.0))
    optimizer = OPTIMIZERS.get(cfg.name)(groups, cfg)
    set_lr(optimizer, lr)
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled rate, times each group's ``lr_scale``."""
    for group in optimizer.param_groups:
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
