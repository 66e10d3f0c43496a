"""Spherical k-means over a feature bank sharded across ranks (DeepCluster-v2, Caron et al. 2020,
SwAV paper appendix "DeepCluster-v2"): cosine similarity, centroids re-normalised each iteration."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import active, all_reduce_sum, rank


def broadcast_from_first(x: torch.Tensor, group: ProcessGroup | None) -> torch.Tensor:
    """``x`` as held by the group's first rank, on every rank (in place)."""
    if active(group):
        dist.broadcast(x, src=dist.get_global_rank(group, 0), group=group)
    return x


@torch.no_grad()
def init_centroids(
    x: torch.Tensor, num_clusters: int, generator: torch.Generator, group: ProcessGroup | None = None
) -> torch.Tensor:
    """``num_clusters`` distinct rows of the first rank's ``x``, picked by ``generator``, shared
    with every rank (the authors initialise from rank 0's memory bank the same way). Only the
    first rank's ``x`` is read; the others may hold fewer rows than ``num_clusters``."""
    if rank(group) != 0:
        return broadcast_from_first(x.new_empty(num_clusters, x.shape[1]), group)
    if x.shape[0] < num_clusters:
        raise ValueError(f"k-means with {num_clusters} clusters needs as many samples, the first rank has {len(x)}")
    pick = torch.randperm(x.shape[0], generator=generator)[:num_clusters].to(x.device)
    return broadcast_from_first(x[pick].clone(), group)


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, centroids: torch.Tensor, iterations: int, group: ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd iterations on unit vectors: assign each row of ``x`` (this rank's share of the
    data, L2-normalised) to the centroid of highest cosine similarity, then move each centroid
    to the normalised mean of its members, summed over ranks. A centroid left without members
    keeps its position. Returns the final centroids (identical on every rank) and the
    assignment of each local row to them.
    """
    x = F.normalize(x.float(), dim=1)
    centroids = F.normalize(centroids.float(), dim=1).clone()
    assignments = (x @ centroids.t()).argmax(dim=1)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        counts = torch.bincount(assignments, minlength=centroids.shape[0]).to(x.dtype)
        all_reduce_sum(sums, group)
        all_reduce_sum(counts, group)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled] / counts[filled, None], dim=1)
        assignments = (x @ centroids.t()).argmax(dim=1)
    return centroids, assignments
