"""Retrieval of the pool images nearest to a curated seed set (Oquab et al. 2024, DINOv2,
section 3: each image of the curated set retrieves its nearest uncurated images).

Every seed contributes equally: the seeds' first neighbours are taken, then their second ones,
and so on, until ``target`` distinct pool images are chosen (ties within one round go to the
more similar pair first). A search depth that turns out too shallow (seeds sharing neighbours)
is doubled and the search repeated.
"""

from __future__ import annotations

import numpy as np

from sslframe.curate.search import IndexSpec, build_index, normalised, search
from sslframe.errors import UserError


def retrieve(
    pool: np.ndarray, seeds: np.ndarray, target: int, spec: IndexSpec | None = None
) -> tuple[np.ndarray, dict]:
    """(sorted row numbers of ``pool``, report) of ``target`` images nearest to the seeds."""
    if pool.shape[1] != seeds.shape[1]:
        raise UserError(
            f"pool and seed embeddings differ in width ({pool.shape[1]} vs {seeds.shape[1]}): embed both with one trunk"
        )
    target = min(target, len(pool))
    index = build_index(normalised(pool), spec or IndexSpec())
    queries = normalised(seeds)
    depth = max(1, -(-target // len(seeds)))
    while True:
        sims, ids = search(index, queries, min(2 * depth, len(pool)))
        chosen, rounds = _round_robin(sims, ids, target)
        if len(chosen) >= target or ids.shape[1] >= len(pool):
            break
        depth *= 2
    report = {
        "seeds": len(seeds),
        "selected": len(chosen),
        "neighbour_rounds": rounds,
        "min_similarity": float(sims[ids >= 0].min()) if (ids >= 0).any() else None,
    }
    return np.sort(np.array(chosen, dtype=np.int64)), report


def _round_robin(sims: np.ndarray, ids: np.ndarray, target: int) -> tuple[list[int], int]:
    chosen: list[int] = []
    seen: set[int] = set()
    for r in range(ids.shape[1]):
        order = np.argsort(-sims[:, r], kind="stable")
        for i in ids[order, r].tolist():
            if i >= 0 and i not in seen:
                seen.add(i)
                chosen.append(i)
                if len(chosen) == target:
                    return chosen, r + 1
    return chosen, ids.shape[1]
