"""Batch norm over groups of a batch, as if each group were on a device of its own.

MoCo's shuffle-BN (He et al. 2020, sec. 3.3) needs several devices: each normalises its own
sub-batch, and the keys are shuffled across devices so that a query and its positive key never
share batch statistics. In one process the authors' CIFAR-10 demo (moco/colab notebook,
``SplitBatchNorm``) splits the batch into groups normalised separately instead; this module does
the same for any model, for the duration of a ``with`` block, without changing its modules or
parameter names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from sslframe.errors import UserError


def _split_forward(norm: nn.modules.batchnorm._BatchNorm, groups: int, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of ``x`` where sample ``n`` is normalised with the statistics of the samples
    ``n' = n (mod groups)``; running statistics move by the mean of the groups' statistics."""
    n, channels = x.shape[0], x.shape[1]
    if n % groups:
        raise UserError(f"the batch of {n} does not split into method.bn_splits={groups} equal groups")
    # (N, C, ...) -> (N / G, G * C, ...): channel g * C + c holds channel c of the samples of group g.
    grouped = x.reshape(n // groups, groups * channels, *x.shape[2:])
    mean = norm.running_mean.repeat(groups) if norm.running_mean is not None else None
    var = norm.running_var.repeat(groups) if norm.running_var is not None else None
    weight = norm.weight.repeat(groups) if norm.weight is not None else None
    bias = norm.bias.repeat(groups) if norm.bias is not None else None
    momentum = norm.momentum if norm.momentum is not None else 0.1
    out = F.batch_norm(grouped, mean, var, weight, bias, True, momentum, norm.eps)
    if mean is not None and var is not None:
        with torch.no_grad():
            norm.running_mean.copy_(mean.view(groups, channels).mean(dim=0))
            norm.running_var.copy_(var.view(groups, channels).mean(dim=0))
        if norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
    return out.reshape(x.shape)


@contextmanager
def split_batch_norm(module: nn.Module, groups: int) -> Iterator[None]:
    """Within the block, every batch norm of ``module`` in training mode normalises ``groups``
    interleaved groups of its batch (samples ``g, g + G, g + 2G, ...``) separately; in eval mode,
    or with ``groups`` 1, nothing changes."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if groups <= 1 or not norms:
        yield
        return
    for norm in norms:
        plain = norm.forward

        def forward(x: torch.Tensor, norm: nn.Module = norm, plain: object = plain) -> torch.Tensor:
            return _split_forward(norm, groups, x) if norm.training else plain(x)  # type: ignore[operator]

        norm.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward
