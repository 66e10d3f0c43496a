"""Losses run in at least float32, whatever the autocast precision of the network."""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is half or bfloat16; higher precisions are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
