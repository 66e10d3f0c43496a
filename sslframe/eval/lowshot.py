"""Low-shot evaluation: probes fitted on small class-balanced subsets of the labelled data.

Subsets follow the semi-supervised protocol of SimCLR/BYOL/SwAV (1% and 10% of the labels)
and the N-images-per-class protocol of low-shot benchmarks (e.g. Assran et al. 2022, MSN).
Here a fraction f keeps round(f * N / C) images of every class (class-balanced, so an
imbalanced dataset does not lose its small classes), at least one; each subset is drawn by a
fixed seed, several seeds give the mean and standard deviation.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` samples of every class (all of a smaller class), drawn by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        pick = torch.randperm(len(members), generator=generator)[:per_class]
        chosen.append(members[pick])
    return torch.cat(chosen).sort().values


def subset_sizes(labels: torch.Tensor, fractions: Sequence[float], per_class: Sequence[int]) -> dict[str, int]:
    """Images per class for each requested subset: ``"1%"`` -> round(0.01 * N / C), ``"5_per_class"`` -> 5."""
    classes = int(labels.unique().numel())
    sizes = {f"{f * 100:g}%": max(1, round(f * len(labels) / classes)) for f in fractions}
    sizes.update({f"{n}_per_class": int(n) for n in per_class})
    return sizes


def lowshot(
    labels: torch.Tensor,
    sizes: dict[str, int],
    seeds: Sequence[int],
    probe: Callable[[torch.Tensor, int], float],
) -> dict[str, dict[str, object]]:
    """``probe(subset_indices, seed)`` -> top-1 for each subset and seed; mean and std per subset."""
    results: dict[str, dict[str, object]] = {}
    for name, per_class in sizes.items():
        scores = [probe(balanced_subset(labels, per_class, seed), seed) for seed in seeds]
        results[name] = {
            "per_class": per_class,
            "top1_mean": statistics.fmean(scores),
            "top1_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "top1_per_seed": dict(zip((str(s) for s in seeds), scores, strict=True)),
        }
    return results
