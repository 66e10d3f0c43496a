"""Exponential moving averages of networks (momentum encoders, EMA teachers and targets).

Used by MoCo (He et al. 2020), BYOL (Grill et al. 2020), DINO (Caron et al. 2021) and I-JEPA
(Assran et al. 2023): the target's weights follow ``target <- m * target + (1 - m) * online``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from sslframe.distributed.collectives import local_shard


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that receives no gradients (the EMA target starts equal) and is
    never stochastically shortened: the authors build their teachers without stochastic depth
    (DINO's main_dino.py passes drop_path_rate to the student only; iBOT and DINOv2 likewise)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    for m in target.modules():
        if hasattr(m, "drop_path_rate"):
            m.drop_path_rate = 0.0
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float, skip: torch.Tensor | None = None) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter; buffers
    (batch-norm statistics) are copied from the online network. Where ``skip`` (a float tensor,
    0 or 1, ``StepContext.skipped``) is 1 the target stays as it is, decided on the device."""
    # Under FSDP2 online and target are sharded alike, so their local shards pair up.
    t_params = [local_shard(p) for p in target.parameters()]
    o_params = [local_shard(p).to(t.dtype) for p, t in zip(online.parameters(), t_params, strict=True)]
    if t_params:
        if skip is None:
            torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
        else:
            weight = (1.0 - skip.to(device=t_params[0].device, dtype=torch.float32).reshape(())) * (1.0 - momentum)
            torch._foreach_lerp_(t_params, o_params, weight.to(t_params[0].dtype))
    for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
        t_local, o_local = local_shard(t_buf), local_shard(o_buf)
        if skip is None:
            t_local.copy_(o_local)
        else:
            t_local.copy_(torch.where(skip.to(t_local.device).reshape(()) > 0, t_local, o_local))


def cosine_momentum(base: float, step: int, total_steps: int, final: float = 1.0) -> float:
    """Momentum rising from ``base`` to ``final`` on a half cosine over training (BYOL eq. in
    section 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, with final = 1)."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
