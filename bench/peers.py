"""The peer side of the head-to-head: SimCLR and SwAV written the way lightly's own examples
write them (``examples/pytorch/simclr.py`` and ``swav.py`` in lightly 1.6), on a trunk we pass in.

What is lightly's here: the projection heads, the prototypes and the losses
(``lightly.loss.NTXentLoss``, ``lightly.loss.SwaVLoss``). The step has the examples' structure:
one model call per view, ``SwaVPrototypes.normalize()`` at the start of each step, a plain
``torch.optim.SGD(model.parameters(), ...)`` (torch's default per-parameter loop on the CPU),
``zero_grad()`` after the step. lightly is an optional benchmark dependency (``pip install
--no-deps lightly``), imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn


class LightlySimCLR(nn.Module):
    """Trunk + lightly's SimCLR projection head (v1: two layers, batch norm)."""

    def __init__(self, trunk: nn.Module, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        from lightly.models.modules.heads import SimCLRProjectionHead

        self.backbone = trunk
        self.projection_head = SimCLRProjectionHead(in_dim, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


class LightlySwaV(nn.Module):
    """Trunk + lightly's SwaV projection head + prototypes; returns prototype scores."""

    def __init__(self, trunk: nn.Module, in_dim: int, hidden_dim: int, out_dim: int, prototypes: int) -> None:
        super().__init__()
        from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes

        self.backbone = trunk
        self.projection_head = SwaVProjectionHead(in_dim, hidden_dim, out_dim)
        self.prototypes = SwaVPrototypes(out_dim, n_prototypes=prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(self.projection_head(self.backbone(x).flatten(start_dim=1)), dim=1, p=2)
        return self.prototypes(z)


def simclr_loss(temperature: float) -> nn.Module:
    from lightly.loss import NTXentLoss

    return NTXentLoss(temperature=temperature)


def swav_loss(temperature: float, epsilon: float, iterations: int) -> nn.Module:
    from lightly.loss import SwaVLoss

    return SwaVLoss(temperature=temperature, sinkhorn_iterations=iterations, sinkhorn_epsilon=epsilon)


def lightly_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    crops: list[torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
    global_crops: int = 2,
) -> Callable[[], torch.Tensor]:
    """One training step in the examples' structure; returns a closure that runs it."""

    def step() -> torch.Tensor:
        if isinstance(model, LightlySwaV):
            model.prototypes.normalize()
        with autocast():
            outputs = [model(x) for x in crops]
            if isinstance(model, LightlySwaV):
                loss = criterion(outputs[:global_crops], outputs[global_crops:])
            else:
                loss = criterion(outputs[0], outputs[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    return step
