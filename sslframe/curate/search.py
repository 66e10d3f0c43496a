"""Nearest-neighbour search over embeddings through faiss, in memory-bounded chunks.

Embeddings are L2-normalised, so inner product is cosine similarity. Small pools use an exact
index (``Flat``); large ones an inverted file (``IVF<nlist>,Flat``) or, when the vectors
themselves would not fit in memory, an inverted file of product-quantised codes
(``IVF<nlist>,PQ<m>x4fs``: 4-bit codes scanned with SIMD, m / 2 bytes a vector; 8-bit codes
train about 30 times slower here for no gain a deduplication threshold can see), both trained on
a sample of the pool. Queries go through in chunks of
``chunk`` rows, so the result buffers stay bounded whatever the pool size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from sslframe.errors import UserError

# Up to this many vectors the exact index is used by ``kind="auto"`` (a 200k x 2048 float32 pool
# is 1.6 GB, searched exhaustively in minutes on one CPU socket).
EXACT_LIMIT = 200_000
INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq")


def faiss_module():
    # faiss's loader logs every CPU-specific build it tries at INFO level.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        raise UserError("curation needs faiss: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def normalised(x: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous rows of unit length (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass
class IndexSpec:
    """Which index to build: ``kind`` one of INDEX_KINDS; ``nlist`` inverted lists (0: about
    4 sqrt(n)); ``nprobe`` lists visited per query; ``pq_m`` sub-quantisers of ``ivfpq``
    (bytes per vector); ``train_size`` vectors the quantisers are trained on."""

    kind: str = "auto"
    nlist: int = 0
    nprobe: int = 16
    pq_m: int = 16
    train_size: int = 100_000
    seed: int = 0

    def resolved(self, n: int) -> str:
        if self.kind not in INDEX_KINDS:
            raise UserError(f"unknown index kind '{self.kind}'; valid choices: {', '.join(INDEX_KINDS)}")
        if self.kind == "auto":
            return "flat" if n <= EXACT_LIMIT else "ivf"
        return self.kind


def build_index(x: np.ndarray, spec: IndexSpec):
    """An inner-product index over the rows of ``x`` (normalised float32)."""
    faiss = faiss_module()
    n, d = x.shape
    kind = spec.resolved(n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        if kind == "ivfpq" and d % spec.pq_m:
            raise UserError(f"index pq_m={spec.pq_m} must divide the embedding width {d}")
        factory = f"IVF{nlist},Flat" if kind == "ivf" else f"IVF{nlist},PQ{spec.pq_m}x4fs"
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(spec.seed)
        sample = x if n <= spec.train_size else x[np.sort(rng.choice(n, spec.train_size, replace=False))]
        index.train(sample)
        index.nprobe = min(spec.nprobe, nlist)
    for start in range(0, n, 1 << 18):
        index.add(x[start : start + (1 << 18)])
    return index


def search(index, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of each query's ``k`` nearest rows, searched ``chunk`` queries at a
    time; ids are -1 where fewer than ``k`` rows were found."""
    k = min(k, index.ntotal)
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        s, i = index.search(queries[start : start + chunk], k)
        sims[start : start + chunk], ids[start : start + chunk] = s, i
    return sims, ids


def exact_similarities(x: np.ndarray, ids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Cosine of each row of ``x`` (normalised) with its candidates ``ids`` (-1: none, scored
    -inf), recomputed from the vectors: an IVF-PQ index finds candidates from lossy codes whose
    similarities run low (measured: no planted copy of a million reached 0.95 through 4-bit
    codes), so thresholds are applied to exact values."""
    out = np.full(ids.shape, -np.inf, dtype=np.float32)
    for start in range(0, len(ids), chunk):
        block = ids[start : start + chunk]
        valid = block >= 0
        others = x[np.where(valid, block, 0)]
        sims = np.einsum("qd,qkd->qk", x[start : start + len(block)], others)
        out[start : start + len(block)] = np.where(valid, sims, -np.inf)
    return out
