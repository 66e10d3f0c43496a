"""Full fine-tuning: the pretrained trunk plus a new linear head, every weight trained.

Layer-wise learning-rate decay (Clark et al. 2020 ELECTRA; Bao et al. 2022 BEiT; He et al. 2022
MAE, appendix A.3): with L = len(trunk.blocks()) + 1, parameters before the first block (stem,
patch embedding) get ``lr * decay^L``, block i (0-based) ``lr * decay^(L - i - 1)`` and the head and
anything after the last block ``lr``. It only needs ``trunk.blocks()``, so it works for any trunk.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslframe.models.trunks import Trunk
from sslframe.optim.build import trunk_layer_ids
from sslframe.optim.schedules import warmup_cosine


class Classifier(nn.Module):
    """Trunk, then a linear head on its pooled features."""

    def __init__(self, trunk: Trunk, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_dim, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def layer_ids(trunk: Trunk) -> tuple[dict[str, int], int]:
    """Layer id of every trunk parameter name (sslframe/optim/build.py, shared with pretraining)."""
    return trunk_layer_ids(trunk)


def decayed_param_groups(model: Classifier, lr: float, weight_decay: float, decay: float) -> list[dict[str, Any]]:
    """Parameter groups with per-layer learning rates; biases and norms get no weight decay."""
    ids, num_layers = layer_ids(model.trunk)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named = [(f"trunk.{n}", p, ids[n]) for n, p in model.trunk.named_parameters()]
    named += [(f"head.{n}", p, num_layers) for n, p in model.head.named_parameters()]
    for name, param, layer in named:
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1
        key = (layer, no_decay)
        if key not in groups:
            scale = decay ** (num_layers - layer)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_finetune_optimizer(
    model: Classifier, name: str, lr: float, weight_decay: float, decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    groups = decayed_param_groups(model, lr, weight_decay, decay)
    for group in groups:
        group.pop("names")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def train_finetune(
    model: Classifier,
    batches: Any,
    steps_per_epoch: int,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    warmup_epochs: int,
    device: torch.device,
) -> Classifier:
    """Cross-entropy training; every group follows one warmup-cosine curve times its ``lr_scale``."""
    peak = max(group["lr"] / group.get("lr_scale", 1.0) for group in optimizer.param_groups)
    schedule = warmup_cosine(peak, max(epochs * steps_per_epoch, 1), warmup_epochs * steps_per_epoch)
    model.to(device).train()
    step = 0
    for epoch in range(epochs):
        for images, labels in batches(epoch):
            lr = float(schedule[min(step, len(schedule) - 1)])
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return model.eval()
