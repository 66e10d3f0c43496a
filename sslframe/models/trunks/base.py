"""What every trunk offers the rest of the framework."""

from __future__ import annotations

import torch
from torch import nn


class Trunk(nn.Module):
    """A backbone that maps images to pooled feature vectors.

    Subclasses set ``out_dim`` and implement ``forward_features`` (the last feature map).
    ``blocks()`` lists the repeated units (residual blocks) that parallelism strategies wrap
    one by one (FSDP units, activation checkpointing, per-block compilation).
    """

    out_dim: int
    # Device types on which channels-last activations make this trunk faster (trainer.channels_last):
    # convolutions on GPUs by default; subclasses say where else it pays.
    channels_last_devices: tuple[str, ...] = ("cuda",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError
