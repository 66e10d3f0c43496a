"""kNN classification on features where the right answer is known."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslframe.eval.knn import knn_accuracy, knn_predict


def clustered(n_per_class: int, classes: int, dim: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)), dim=1)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return F.normalize(x, dim=1), labels


def test_separable_clusters_are_classified_perfectly() -> None:
    train_x, train_y = clustered(50, 5, 32, 0.05, seed=0)
    test_x, test_y = clustered(20, 5, 32, 0.05, seed=1)
    acc = knn_accuracy(train_x, train_y, test_x, test_y, ks=[1, 20])
    assert acc["weighted"] == {"1": 1.0, "20": 1.0}
    assert acc["majority"]["20"] == 1.0


def test_random_labels_give_chance_accuracy() -> None:
    train_x, _ = clustered(200, 4, 16, 1.0, seed=0)
    test_x, _ = clustered(200, 4, 16, 1.0, seed=1)
    g = torch.Generator().manual_seed(3)
    train_y = torch.randint(0, 4, (len(train_x),), generator=g)
    test_y = torch.randint(0, 4, (len(test_x),), generator=g)
    acc = knn_accuracy(train_x, train_y, test_x, test_y, ks=[20])
    assert abs(acc["weighted"]["20"] - 0.25) < 0.08


def test_weighted_vote_follows_the_formula() -> None:
    # One query; neighbours with similarities 0.9 (class 0) and 0.8, 0.7 (class 1). With T = 0.07:
    # class 0 weight exp(0.9/T), class 1 weight exp(0.8/T) + exp(0.7/T). Majority picks class 1.
    train = torch.tensor([[0.9, math.sqrt(1 - 0.81)], [0.8, -math.sqrt(1 - 0.64)], [0.7, math.sqrt(1 - 0.49)]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    preds = knn_predict(train, labels, query, ks=[3], temperature=0.07)
    weight0, weight1 = math.exp(0.9 / 0.07), math.exp(0.8 / 0.07) + math.exp(0.7 / 0.07)
    assert int(preds["weighted"][3]) == (0 if weight0 > weight1 else 1)
    assert int(preds["majority"][3]) == 1
    hot = knn_predict(train, labels, query, ks=[3], temperature=10.0)
    assert int(hot["weighted"][3]) == 1  # a high temperature makes the vote nearly a majority


def test_random_init_baseline_is_the_network_the_run_started_from(image_folder, tmp_path) -> None:
    from sslframe.engine.trainer import Trainer
    from sslframe.eval.features import load_trunk
    from tests.helpers import tiny_config

    cfg = tiny_config(image_folder, tmp_path / "run", "trainer.max_steps=1", "trainer.seed=7")
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.method.trunk.state_dict().items()}
    trainer.fit()
    baseline, _, _ = load_trunk(tmp_path / "run", random_init=True)
    trained, _, _ = load_trunk(tmp_path / "run")
    for key, value in baseline.state_dict().items():
        assert torch.equal(value, initial[key].to(value.dtype)), key
    assert any(not torch.equal(v, initial[k]) for k, v in trained.state_dict().items())
