"""LARS: layer-wise adaptive rate scaling (You et al. 2017, "Large Batch Training of
Convolutional Networks", eq. 6), as used by SimCLR, SwAV, BYOL and SEER.

For each parameter tensor w with gradient g and weight decay wd, the local rate is
eta * ||w|| / (||g|| + wd * ||w||); the update is SGD with momentum on
local_rate * (g + wd * w). Parameter groups with ``lars_exclude=True`` (biases and
normalisation parameters) get neither weight decay nor adaptation.

Like PyTorch's fused optimizers, LARS reads ``found_inf`` (and ``grad_scale``) set on it by
GradScaler or ``sslframe.optim.build.step_unless``: where ``found_inf`` is non-zero the step
leaves parameters and momentum untouched, decided on the device without a host read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sslframe.distributed.collectives import local_shard


class LARS(torch.optim.Optimizer):
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if grad_scale is not None:
                grads = torch._foreach_div(grads, grad_scale)
            if not group["lars_exclude"]:
                wd = group["weight_decay"]
                w_norms = torch._foreach_norm(params)
                g_norms = torch._foreach_norm(grads)
                if wd != 0:
                    grads = torch._foreach_add(grads, params, alpha=wd)
                scales = []
                for w_norm, g_norm in zip(w_norms, g_norms, strict=True):
                    trust = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    ok = (w_norm > 0) & (g_norm > 0)
                    scales.append(torch.where(ok, trust, torch.ones_like(trust)))
                grads = torch._foreach_mul(grads, scales)
            if found_inf is None:
                self._momentum_update(group, params, grads)
            else:
                self._gated_momentum_update(group, params, grads, found_inf.to(params[0].device) > 0)
        return loss

    def _momentum_update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        momentum = group["momentum"]
        bufs = []
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None or momentum == 0:
                buf = state["momentum_buffer"] = g.detach().clone()
            else:
                buf.mul_(momentum).add_(g)
            bufs.append(buf)
        torch._foreach_add_(params, bufs, alpha=-group["lr"])

    def _gated_momentum_update(
        self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor], skip: torch.Tensor
    ) -> None:
        """The same update, selected per tensor against the old values where ``skip`` holds
        (the gradients may then be NaN or infinite, so a select, never a multiply by zero).
        A missing buffer starts at zero: ``0 * momentum + g`` is the first step's ``g``. FSDP2's
        sharded tensors are updated through their local shards, in place."""
        momentum, lr = group["momentum"], group["lr"]
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            p_local, g_local, buf = local_shard(p), local_shard(g), local_shard(state["momentum_buffer"])
            new = torch.add(g_local, buf, alpha=momentum) if momentum != 0 else g_local
            buf.copy_(torch.where(skip, buf, new))
            p_local.copy_(torch.where(skip, p_local, p_local - lr * buf))
