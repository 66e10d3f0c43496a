"""Multi-crop forward: one trunk call per crop resolution."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def group_by_resolution(crops: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of consecutive crops that share a spatial size (e.g. [[0, 1], [2..7]])."""
    groups: list[list[int]] = []
    for i, crop in enumerate(crops):
        if groups and crops[groups[-1][0]].shape[-2:] == crop.shape[-2:]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def multicrop_forward(fn: Callable[[torch.Tensor], torch.Tensor], crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to every crop, batching crops of equal resolution together.

    Returns the outputs concatenated in crop order: rows ``[i*B:(i+1)*B]`` belong to crop ``i``.
    """
    outputs = [fn(torch.cat([crops[i] for i in group])) for group in group_by_resolution(crops)]
    return torch.cat(outputs)


def per_view_forward(fn: Callable[[torch.Tensor], torch.Tensor], views: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to every view on its own (batch norm sees one view's batch at a time), as the
    authors of Barlow Twins and VICReg do; outputs concatenated in view order like
    :func:`multicrop_forward`."""
    return torch.cat([fn(view) for view in views])
