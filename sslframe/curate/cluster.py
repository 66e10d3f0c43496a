"""Hierarchical k-means with resampling and balanced sampling from its hierarchy.

Following Vo et al. 2024 (*Automatic Data Curation for Self-Supervised Learning: A
Clustering-Based Approach*, section 4), as we implement it:

- Level 1 clusters the embeddings into ``levels[0]`` clusters; level ``t`` clusters the
  centroids of level ``t - 1`` into ``levels[t - 1]`` clusters, so the top level has the fewest.
- Plain k-means puts most centroids where the data is densest (a long-tailed pool gets many
  clusters of its head concepts). Each level therefore runs ``resampling_steps`` rounds of
  resampling after its k-means: from every cluster the ``resample_size`` points nearest to its
  centroid are kept, k-means is run again on the union of these equal-sized samples (started
  from the current centroids), and every point is reassigned. Clusters then stand for concepts
  more evenly instead of for mass.
- Balanced sampling walks the hierarchy top-down: the target size is split evenly among the top
  clusters, a cluster with fewer images than its share gives all of them and the remainder is
  split among the others; each cluster splits its share the same way among its children, and
  a bottom cluster gives its share of images at random (or those nearest its centroid).

k-means runs in faiss (``faiss.Kmeans``): multi-threaded, and on a GPU with faiss-gpu.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from sslframe.curate.search import faiss_module, normalised
from sslframe.errors import UserError

WITHIN = ("random", "closest")


# k-means++ seeds from at most this many points per centroid, and faiss trains on at most
# TRAIN_PER_CENTROID per centroid (its own default); every point is then assigned.
SEED_PER_CENTROID = 64
TRAIN_PER_CENTROID = 256


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007) on a sample of SEED_PER_CENTROID points
    per centroid: each next centroid drawn with probability proportional to the squared distance
    to the nearest one already drawn. faiss starts from k random points, which on a long-tailed
    pool are mostly of the head: Lloyd's iterations then keep the head split and the tail merged
    (seen on planted clusters, tests/curate)."""
    rng = np.random.default_rng(seed)
    if len(x) > SEED_PER_CENTROID * k:
        x = x[np.sort(rng.choice(len(x), SEED_PER_CENTROID * k, replace=False))]
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(len(x))]
    nearest = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(nearest.sum())
        pick = int(rng.choice(len(x), p=nearest / total)) if total > 0 else int(rng.integers(len(x)))
        centroids[j] = x[pick]
        np.minimum(nearest, ((x - centroids[j]) ** 2).sum(1), out=nearest)
    return centroids


def kmeans(
    x: np.ndarray, k: int, iters: int, seed: int, init: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids, each row's cluster, each row's squared distance to it); seeded with k-means++
    unless ``init`` is given."""
    faiss = faiss_module()
    if init is None:
        init = kmeans_plus_plus(x, k, seed)
    km = faiss.Kmeans(
        x.shape[1], k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1,
        max_points_per_centroid=TRAIN_PER_CENTROID,
    )  # fmt: skip
    km.train(x, init_centroids=init)
    dist, assign = km.index.search(x, 1)
    return km.centroids.copy(), assign[:, 0].astype(np.int64), dist[:, 0]


def resampled_kmeans(
    x: np.ndarray, k: int, iters: int, steps: int, resample_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-means, then ``steps`` rounds of 'refit on the ``resample_size`` points nearest each
    centroid, reassign everything'. Returns (centroids, assignment)."""
    if k > len(x):
        raise UserError(f"a k-means level asks for {k} clusters of only {len(x)} points; use fewer clusters")
    centroids, assign, dist = kmeans(x, k, iters, seed)
    for step in range(steps):
        picked = []
        for c in range(k):
            members = np.flatnonzero(assign == c)
            if len(members):
                picked.append(members[np.argsort(dist[members], kind="stable")[:resample_size]])
        sample = x[np.concatenate(picked)]
        if len(sample) < k:
            break
        centroids, _, _ = kmeans(sample, k, iters, seed + step + 1, init=centroids)
        index = faiss_module().IndexFlatL2(x.shape[1])
        index.add(centroids)
        d, a = index.search(x, 1)
        assign, dist = a[:, 0].astype(np.int64), d[:, 0]
    return centroids, assign


@dataclass
class Hierarchy:
    """``parents[0][i]``: level-1 cluster of point i; ``parents[t][c]``: level-(t+2) cluster of
    level-(t+1) cluster c. ``centroids[t]``: level-(t+1) centroids."""

    levels: list[int]
    parents: list[np.ndarray] = field(default_factory=list)
    centroids: list[np.ndarray] = field(default_factory=list)

    def point_clusters(self, level: int) -> np.ndarray:
        """Each point's cluster at ``level`` (1 = finest)."""
        assign = self.parents[0]
        for t in range(1, level):
            assign = self.parents[t][assign]
        return assign


def default_levels(n: int) -> list[int]:
    """Vo et al. use about 4 levels for billions of images; here each level has about a tenth of
    the clusters of the one below, starting from about one cluster per 20 images, at most 4 levels,
    the top one with at least 10 clusters."""
    levels = [max(2, n // 20)]
    while len(levels) < 4 and levels[-1] // 10 >= 10:
        levels.append(levels[-1] // 10)
    return levels


def hierarchical_kmeans(
    x: np.ndarray, levels: list[int], iters: int = 20, resampling_steps: int = 1, resample_size: int = 10,
    seed: int = 0,
) -> Hierarchy:  # fmt: skip
    if not levels or any(b >= a for a, b in itertools.pairwise(levels)):
        raise UserError(f"--levels must list decreasing cluster counts, finest first (got {levels})")
    points = normalised(x)
    hier = Hierarchy(list(levels))
    for t, k in enumerate(levels):
        centroids, assign = resampled_kmeans(points, k, iters, resampling_steps, resample_size, seed + 1000 * t)
        hier.parents.append(assign)
        hier.centroids.append(centroids)
        points = np.ascontiguousarray(centroids, dtype=np.float32)
    return hier


def split_evenly(target: int, capacities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shares of ``target`` among bins of these capacities, as equal as the capacities allow
    (water-filling); the leftover units of an uneven split go to randomly chosen bins."""
    capacities = np.asarray(capacities, dtype=np.int64)
    share = np.zeros_like(capacities)
    left = min(int(target), int(capacities.sum()))
    while left > 0:
        open_bins = np.flatnonzero(share < capacities)
        each = left // len(open_bins)
        if each == 0:
            lucky = rng.choice(open_bins, left, replace=False)
            share[lucky] += 1
            break
        give = np.minimum(capacities[open_bins] - share[open_bins], each)
        share[open_bins] += give
        left -= int(give.sum())
    return share


def balanced_sample(hier: Hierarchy, x: np.ndarray, target: int, seed: int = 0, within: str = "random") -> np.ndarray:
    """Row numbers of ``target`` points drawn top-down through the hierarchy (sorted)."""
    if within not in WITHIN:
        raise UserError(f"unknown within-cluster sampling '{within}'; valid choices: {', '.join(WITHIN)}")
    rng = np.random.default_rng(seed)
    depth = len(hier.levels)
    # children[t][c]: clusters of level t (0 = points) under cluster c of level t + 1.
    children = [_members(hier.parents[t], hier.levels[t]) for t in range(depth)]
    sizes = [np.ones(len(hier.parents[0]), dtype=np.int64)]
    for t in range(depth):
        sizes.append(np.array([sizes[t][m].sum() for m in children[t]], dtype=np.int64))
    top = np.arange(hier.levels[-1])
    quota = {depth: dict(zip(top.tolist(), split_evenly(target, sizes[depth][top], rng).tolist(), strict=True))}
    for t in range(depth, 1, -1):  # from the top level down to level 1's quotas
        quota[t - 1] = {}
        for c, q in quota[t].items():
            kids = children[t - 1][c]
            for kid, share in zip(kids.tolist(), split_evenly(q, sizes[t - 1][kids], rng).tolist(), strict=True):
                quota[t - 1][kid] = share
    picked = []
    unit = normalised(x) if within == "closest" else None
    for c, q in quota[1].items():
        if q == 0:
            continue
        members = children[0][c]
        if within == "random":
            picked.append(rng.choice(members, q, replace=False))
        else:
            assert unit is not None
            d = ((unit[members] - hier.centroids[0][c]) ** 2).sum(1)
            picked.append(members[np.argsort(d, kind="stable")[:q]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _members(assign: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(k + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(k)]


def cluster_report(hier: Hierarchy, rows: np.ndarray) -> dict:
    """Sizes of the top-level clusters, and a summary of the finest level's, before and after
    sampling ``rows``."""
    top, fine = hier.point_clusters(len(hier.levels)), hier.parents[0]

    def summary(sizes: np.ndarray) -> dict:
        return {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
            "clusters": len(sizes),
        }

    return {
        "top_cluster_sizes_before": np.bincount(top, minlength=hier.levels[-1]).tolist(),
        "top_cluster_sizes_after": np.bincount(top[rows], minlength=hier.levels[-1]).tolist(),
        "finest_clusters_before": summary(np.bincount(fine, minlength=hier.levels[0])),
        "finest_clusters_after": summary(np.bincount(fine[rows], minlength=hier.levels[0])),
    }
