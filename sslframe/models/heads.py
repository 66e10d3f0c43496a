"""Projection heads, predictors, the DINO head and SwAV prototypes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sslframe.registry import Choices, register_schema


@dataclass
class MLPHeadConfig:
    """Projection head: Linear (+BN) + activation per hidden layer, then a Linear output."""

    name: str = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [2048])
    output_dim: int = 128
    batch_norm: bool = True
    last_batch_norm: bool = False
    # Learned parameters of that output batch norm: none (MoCo v3's and SimSiam's builder.py:
    # BatchNorm1d(affine=False)), scale (the SimCLR authors' tf2/model.py: the last LinearLayer's
    # batch norm with center=False) or scale_shift (lightly's SimCLRProjectionHead).
    last_batch_norm_params: str = "none"
    activation: str = "relu"
    choices: ClassVar[Choices] = {
        "activation": ("relu", "gelu"),
        "last_batch_norm_params": ("none", "scale", "scale_shift"),
    }


register_schema("head", "mlp", MLPHeadConfig)

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def output_batch_norm(dim: int, params: str) -> nn.BatchNorm1d:
    """The batch norm on a projection head's output, with the learned ``params`` of
    ``MLPHeadConfig.last_batch_norm_params``: ``none``, ``scale`` (the shift stays at zero and is
    not trained: optimizers take only parameters that require a gradient) or ``scale_shift``."""
    if params not in ("none", "scale", "scale_shift"):
        raise ValueError(f"last_batch_norm_params must be none, scale or scale_shift, not {params!r}")
    norm = nn.BatchNorm1d(dim, affine=params != "none")
    if params == "scale":
        norm.bias.requires_grad_(False)
    return norm


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
        last_batch_norm_params: str = "none",
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
            layers.append(output_batch_norm(output_dim, last_batch_norm_params))
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
            last_batch_norm_params=cfg.last_batch_norm_params,
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
    def normalize_(self, skip: torch.Tensor | None = None) -> None:
        """Project every prototype back onto the unit sphere (SwAV, after each optimizer step);
        where ``skip`` (``StepContext.skipped``) is 1 they stay bit-identical (no update happened)."""
        for head in self.heads:
            unit = nn.functional.normalize(head.weight, dim=1)
            if skip is not None:
                unit = torch.where(skip.reshape(()).to(unit.device) > 0, head.weight, unit)
            head.weight.copy_(unit)


def predictor(dim: int, hidden_dims: Sequence[int]) -> MLPHead:
    """The predictor of BYOL and SimSiam: ``dim`` -> hidden (Linear, BN, ReLU) -> ``dim``.

    BYOL (Grill et al. 2020, sec. 3.3) uses one 4096-wide hidden layer; SimSiam (Chen & He 2021,
    sec. 4) a 512-wide bottleneck. The output is not normalised (the loss normalises it).
    """
    return MLPHead(dim, hidden_dims, dim, batch_norm=True, last_batch_norm=False, activation="relu")


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``w = g * v / ||v||`` per output row
    (Salimans & Kingma 2016). With ``learn_norm=False`` the norm ``g`` is fixed to 1, as DINO
    does by default to stabilise training (Caron et al. 2021, appendix "Projection head")."""

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1)) if learn_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.weight_v, dim=1)
        if self.weight_g is not None:
            weight = weight * self.weight_g
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix): an MLP (hidden 2048,
    GELU, no batch norm) down to a 256-d bottleneck, L2 normalisation, then a weight-normalised
    linear layer to ``out_dim`` (65536) scores. ``last_layer`` is what DINO freezes early on."""

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int] = (2048, 2048),
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        norm_last_layer: bool = True,
        batch_norm: bool = False,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.mlp = MLPHead(in_dim, hidden_dims, bottleneck_dim, batch_norm=batch_norm, activation=activation)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                # Truncated normal (std 0.02) and zero biases, as in the authors' head.
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)
        self.bottleneck_dim = bottleneck_dim
        self.output_dim = out_dim

    @classmethod
    def from_config(cls, in_dim: int, head_cfg: Any, out_dim: int, norm_last_layer: bool) -> DINOHead:
        """The MLP part from a ``head`` config group (its ``output_dim`` is the bottleneck)."""
        return cls(
            in_dim,
            head_cfg.hidden_dims,
            head_cfg.output_dim,
            out_dim,
            norm_last_layer=norm_last_layer,
            batch_norm=head_cfg.batch_norm,
            activation=head_cfg.activation,
        )

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised bottleneck features (what the last layer scores)."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))
