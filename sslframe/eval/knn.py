"""k-nearest-neighbour classification on frozen features.

Weighted vote (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", as used by DINO, Caron et al. 2021): the k nearest training features by
cosine similarity s each vote for their class with weight exp(s / T); T = 0.07. The majority
variant counts one vote per neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    ks: Sequence[int],
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[str, dict[int, torch.Tensor]]:
    """Predicted labels for every test feature, per k, for the weighted and majority votes.

    Features are expected L2-normalised, so the dot product is the cosine similarity.
    """
    num_classes = num_classes or int(train_labels.max()) + 1
    kmax = min(max(ks), train_features.shape[0])
    preds: dict[str, dict[int, list[torch.Tensor]]] = {"weighted": {k: [] for k in ks}, "majority": {k: [] for k in ks}}
    for start in range(0, test_features.shape[0], chunk):
        sims = test_features[start : start + chunk] @ train_features.t()
        top_sims, top_idx = sims.topk(kmax, dim=1)
        one_hot = torch.nn.functional.one_hot(train_labels[top_idx], num_classes).float()  # n x kmax x C
        weights = (top_sims / temperature).exp()
        for k in ks:
            kk = min(k, kmax)
            weighted = (one_hot[:, :kk] * weights[:, :kk, None]).sum(1)
            preds["weighted"][k].append(weighted.argmax(1))
            preds["majority"][k].append(one_hot[:, :kk].sum(1).argmax(1))
    return {vote: {k: torch.cat(v) for k, v in per_k.items()} for vote, per_k in preds.items()}


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int],
    temperature: float = 0.07,
) -> dict[str, dict[str, float]]:
    """Top-1 accuracy per k: ``{"weighted": {"20": 0.9, ...}, "majority": {...}}``."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    preds = knn_predict(train_features, train_labels, test_features, ks, temperature, num_classes)
    return {
        vote: {str(k): float((p == test_labels).float().mean()) for k, p in per_k.items()}
        for vote, per_k in preds.items()
    }
