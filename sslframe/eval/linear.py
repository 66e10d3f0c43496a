"""Linear probe on frozen features (the common protocol of MoCo, SimCLR, SwAV, DINO, MAE).

A single linear layer (weights N(0, 0.01), zero bias) trained with SGD + momentum 0.9 or LARS
under a cosine schedule; optionally a BatchNorm without affine parameters in front of it, as
MAE does for linear probing (He et al. 2022, appendix A.2). Inputs are cached features, or
features recomputed every epoch from lightly augmented images (random resized crop and flip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sslframe.optim.lars import LARS
from sslframe.optim.schedules import warmup_cosine

# Yields (features, labels) mini-batches for one epoch.
EpochBatches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class ProbeSettings:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    batch_norm: bool = False
    seed: int = 0


def linear_classifier(dim: int, num_classes: int, batch_norm: bool) -> nn.Module:
    linear = nn.Linear(dim, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    if batch_norm:
        return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)
    return nn.Sequential(linear)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose label is among the k highest scores (k capped at the classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": float(hits[:, : min(k, kmax)].any(1).float().mean()) for k in ks}


def tensor_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> EpochBatches:
    """Shuffled mini-batches of cached features, the order a pure function of (seed, epoch)."""

    def epoch_batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield features[idx], labels[idx]

    return epoch_batches


def train_linear(
    batches: EpochBatches, steps_per_epoch: int, dim: int, num_classes: int, settings: ProbeSettings
) -> nn.Module:
    """Fit the probe; the learning rate follows a cosine over every iteration."""
    torch.manual_seed(settings.seed)
    model = linear_classifier(dim, num_classes, settings.batch_norm)
    params = model.parameters()
    if settings.optimizer == "lars":
        opt: torch.optim.Optimizer = LARS(params, settings.lr, settings.momentum, settings.weight_decay)
    else:
        opt = torch.optim.SGD(params, settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    schedule = warmup_cosine(settings.lr, max(settings.epochs * steps_per_epoch, 1))
    step = 0
    model.train()
    for epoch in range(settings.epochs):
        for x, y in batches(epoch):
            for group in opt.param_groups:
                group["lr"] = float(schedule[min(step, len(schedule) - 1)])
            loss = nn.functional.cross_entropy(model(x.float()), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return topk_accuracy(model.eval()(features.float()), labels)


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, settings: ProbeSettings
) -> dict[str, float]:
    """Top-1 and top-5 on the validation features of a probe fitted on cached training features."""
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    steps = -(-len(train_y) // settings.batch_size)
    batches = tensor_batches(train_x, train_y, settings.batch_size, settings.seed)
    model = train_linear(batches, steps, train_x.shape[1], num_classes, settings)
    return evaluate(model, val_x, val_y)
