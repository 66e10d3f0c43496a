"""Projection heads and SwAV prototypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLPHead(nn.Module):
    """Linear (+BatchNorm) + activation for each hidden width, then a Linear to ``output_dim``.

    With ``hidden_dims=[2048]`` and ``output_dim=128`` this is the SimCLR/SwAV projection head.
    An empty ``hidden_dims`` gives a single linear projection.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        output_dim: int,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(dim, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(_ACTIVATIONS[activation]())
            dim = hidden
        layers.append(nn.Linear(dim, output_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim

    @classmethod
    def from_config(cls, in_dim: int, cfg: Any) -> MLPHead:
        """Build from a ``head`` config group (``MLPHeadConfig``)."""
        return cls(
            in_dim,
            cfg.hidden_dims,
            cfg.output_dim,
            batch_norm=cfg.batch_norm,
            last_batch_norm=cfg.last_batch_norm,
            activation=cfg.activation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Prototypes(nn.Module):
    """One or several sets of prototype vectors (bias-free linear layers), as in SwAV."""

    def __init__(self, dim: int, num_prototypes: Sequence[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, k, bias=False) for k in num_prototypes)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [head(z) for head in self.heads]

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere (SwAV, after each optimizer step)."""
        for head in self.heads:
            head.weight.copy_(nn.functional.normalize(head.weight, dim=1))
