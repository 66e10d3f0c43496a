"""Linear probe, low-shot subsets and layer-wise LR decay on inputs where the answer is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslframe.eval.finetune import Classifier, decayed_param_groups, layer_ids
from sslframe.eval.linear import ProbeSettings, linear_probe, topk_accuracy
from sslframe.eval.lowshot import balanced_subset, lowshot, subset_sizes
from sslframe.models.trunks.base import Trunk
from sslframe.models.trunks.resnet import ResNet


def gaussian_classes(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    """Class c is a Gaussian around a fixed random centre; ``spread`` is its standard deviation."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return x, labels


@pytest.mark.parametrize(
    "settings",
    [
        ProbeSettings(epochs=10, batch_size=32),
        ProbeSettings(epochs=10, batch_size=32, batch_norm=True),
        ProbeSettings(epochs=10, batch_size=32, optimizer="lars", lr=10.0),
    ],
    ids=["sgd", "sgd_bn", "lars"],
)
def test_separable_classes_are_probed_near_perfectly(settings: ProbeSettings) -> None:
    train_x, train_y = gaussian_classes(40, 6, 16, 0.5, seed=0)
    val_x, val_y = gaussian_classes(20, 6, 16, 0.5, seed=1)
    acc = linear_probe(train_x, train_y, val_x, val_y, settings)
    assert acc["top1"] >= 0.98 and acc["top5"] == 1.0


def test_features_unrelated_to_labels_give_chance() -> None:
    train_x, _ = gaussian_classes(100, 4, 16, 1.0, seed=0)
    val_x, _ = gaussian_classes(100, 4, 16, 1.0, seed=1)
    g = torch.Generator().manual_seed(5)
    train_y, val_y = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    acc = linear_probe(train_x, train_y, val_x, val_y, ProbeSettings(epochs=10, batch_size=32))
    # 400 val samples: the standard error of a 0.25 accuracy is ~0.022, so 0.1 is > 4 sigma.
    assert abs(acc["top1"] - 0.25) < 0.1


def test_topk_accuracy_counts_label_among_k_highest() -> None:
    logits = torch.tensor([[0.9, 0.5, 0.1], [0.1, 0.2, 0.7], [0.3, 0.2, 0.1]])
    labels = torch.tensor([1, 2, 2])
    # Row 0: label 1 is second; row 1: first; row 2: third.
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == pytest.approx({"top1": 1 / 3, "top2": 2 / 3, "top5": 1.0})


def test_lowshot_subsets_are_balanced_and_reproducible() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 100)
    subset = balanced_subset(labels, 5, seed=3)
    assert torch.bincount(labels[subset]).tolist() == [5, 5, 5]
    assert torch.equal(subset, balanced_subset(labels, 5, seed=3))
    assert not torch.equal(subset, balanced_subset(labels, 5, seed=4))
    assert len(balanced_subset(labels, 40, seed=0)) == 40 + 30 + 40  # a smaller class gives all it has
    # 1% of 180 images over 3 classes: round(0.6) = 1 per class; 10%: 6 per class.
    assert subset_sizes(labels, [0.01, 0.1], [2]) == {"1%": 1, "10%": 6, "2_per_class": 2}


def test_lowshot_reports_mean_and_std_over_seeds() -> None:
    labels = torch.arange(4).repeat_interleave(10)
    calls = []

    def probe(subset: torch.Tensor, seed: int) -> float:
        calls.append((len(subset), seed))
        return 0.5 + 0.1 * seed

    result = lowshot(labels, {"2_per_class": 2}, [0, 1, 2], probe)["2_per_class"]
    assert calls == [(8, 0), (8, 1), (8, 2)]
    assert result["top1_mean"] == pytest.approx(0.6)
    assert result["top1_std"] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7


class _Blocks(Trunk):
    """A stand-in for a ViT: an embedding, three blocks, a final norm after them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.norm = nn.LayerNorm(8)
        self.out_dim = 8

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def test_layer_decay_follows_block_depth() -> None:
    ids, num_layers = layer_ids(_Blocks())
    assert num_layers == 4
    assert ids == {
        "embed.weight": 0,
        "embed.bias": 0,
        **{f"layers.{i}.{p}": i + 1 for i in range(3) for p in ("weight", "bias")},
        "norm.weight": 4,
        "norm.bias": 4,
    }
    groups = decayed_param_groups(Classifier(_Blocks(), 5), lr=1.0, weight_decay=0.05, decay=0.5)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    # lr * decay^(L - layer_id) with L = 4 (MAE's lrd rule).
    assert lr_of["trunk.embed.weight"] == 0.5**4
    assert lr_of["trunk.layers.0.weight"] == 0.5**3
    assert lr_of["trunk.layers.2.weight"] == 0.5
    assert lr_of["trunk.norm.weight"] == lr_of["head.weight"] == 1.0
    wd_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert wd_of["trunk.layers.0.weight"] == 0.05 and wd_of["trunk.layers.0.bias"] == 0.0
    resnet_ids, resnet_layers = layer_ids(ResNet("resnet18", width_multiplier=0.125))
    assert resnet_layers == 9 and resnet_ids["conv1.weight"] == 0 and resnet_ids["layer4.1.conv2.weight"] == 8
