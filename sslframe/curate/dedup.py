"""Deduplication: exact copies by content hash, near copies by embedding similarity.

Exact duplicates share the SHA-256 of their bytes (recorded while embedding). Near duplicates
(re-encoded, resized, slightly cropped copies) are pairs whose embeddings have cosine
similarity at least ``threshold``; each image is linked to those of its ``k`` nearest
neighbours above the threshold, and the connected components of these links are the groups.
Every group keeps one representative, its first image in the source's order, so the result
does not depend on the search order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslframe.curate.search import IndexSpec, build_index, normalised, search


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; the root of a set is its smallest member."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def groups_of(roots: np.ndarray) -> list[list[int]]:
    """The sets with more than one member, each sorted, ordered by their first member."""
    order = np.argsort(roots, kind="stable")
    sorted_roots = roots[order]
    cuts = np.flatnonzero(np.diff(sorted_roots)) + 1
    return [sorted(g.tolist()) for g in np.split(order, cuts) if len(g) > 1]


def exact_duplicates(hashes: list[str]) -> np.ndarray:
    """For each row, the first row with the same hash (itself when it is the first)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(h, i) for i, h in enumerate(hashes)], dtype=np.int64)


def near_duplicate_roots(
    x: np.ndarray, threshold: float, k: int, spec: IndexSpec, chunk: int = 65536
) -> tuple[np.ndarray, int]:
    """Each row's group root under the links 'among each other's k nearest neighbours with
    cosine >= threshold'; also the number of links found."""
    x = normalised(x)
    index = build_index(x, spec)
    sims, ids = search(index, x, k + 1, chunk)  # +1: a row finds itself first
    uf = UnionFind(len(x))
    rows, cols = np.nonzero((sims >= threshold) & (ids >= 0))
    links = 0
    for r, c in zip(rows.tolist(), ids[rows, cols].tolist(), strict=True):
        if r != c:
            uf.union(r, c)
            links += 1
    return uf.roots(), links


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per row: the row is its group's representative
    exact_groups: list[list[int]]
    near_groups: list[list[int]]
    links: int

    def report(self) -> dict:
        sizes = [len(g) for g in self.near_groups]
        return {
            "input": len(self.keep),
            "kept": int(self.keep.sum()),
            "exact_duplicates_removed": int(sum(len(g) - 1 for g in self.exact_groups)),
            "exact_groups": len(self.exact_groups),
            "near_duplicates_removed": int(sum(s - 1 for s in sizes)),
            "near_groups": len(self.near_groups),
            "largest_near_group": max(sizes, default=1),
            "similarity_links": self.links,
        }


def deduplicate(
    x: np.ndarray, hashes: list[str], threshold: float, k: int = 16, spec: IndexSpec | None = None
) -> DedupResult:
    """Exact duplicates first (by ``hashes``; skipped when empty), then near duplicates among the
    remaining rows. Group members are row numbers of ``x``."""
    n = len(x)
    keep = np.ones(n, dtype=bool)
    exact: list[list[int]] = []
    if hashes:
        first = exact_duplicates(hashes)
        exact = groups_of(first)
        keep &= first == np.arange(n)
    rest = np.flatnonzero(keep)
    near: list[list[int]] = []
    links = 0
    if len(rest) > 1:
        roots, links = near_duplicate_roots(x[rest], threshold, k, spec or IndexSpec())
        near = [[int(rest[i]) for i in g] for g in groups_of(roots)]
        keep[rest] = roots == np.arange(len(rest))
    return DedupResult(keep, exact, near, links)
