"""Spherical k-means (DeepCluster-v2's clustering step) on data with known clusters."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslframe.losses.kmeans import init_centroids, spherical_kmeans

K, PER, DIM = 4, 30, 8


def clustered_points(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """K clusters of unit vectors: orthogonal centres plus small noise, shuffled."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(DIM)[:K]
    labels = torch.arange(K).repeat_interleave(PER)
    points = F.normalize(centres[labels] + 0.1 * torch.randn(K * PER, DIM, generator=g), dim=1)
    order = torch.randperm(K * PER, generator=g)
    return points[order], labels[order]


def test_recovers_well_separated_clusters() -> None:
    x, labels = clustered_points()
    init = init_centroids(x, K, torch.Generator().manual_seed(3))
    centroids, assignments = spherical_kmeans(x, init, iterations=10)
    # The same partition up to a renaming of the clusters: a bijection between labels.
    pairs = {(int(a), int(b)) for a, b in zip(labels, assignments, strict=True)}
    assert len(pairs) == K and len({b for _, b in pairs}) == K
    # Each centroid is the normalised mean of its members.
    for k in range(K):
        torch.testing.assert_close(centroids[k], F.normalize(x[assignments == k].mean(dim=0), dim=0))
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(K))


def test_centroid_without_members_keeps_its_place() -> None:
    x, _ = clustered_points()
    far = -F.normalize(x.mean(dim=0), dim=0)  # opposite every point: wins no assignment
    init = torch.cat([x[:3], far[None]])
    centroids, assignments = spherical_kmeans(x, init, iterations=3)
    assert not bool((assignments == 3).any())
    torch.testing.assert_close(centroids[3], far)


def test_initial_centroids_are_distinct_rows_picked_by_the_seed() -> None:
    x, _ = clustered_points()
    a = init_centroids(x, K, torch.Generator().manual_seed(5))
    b = init_centroids(x, K, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    rows = [int((x == c).all(dim=1).nonzero()) for c in a]
    assert len(set(rows)) == K
