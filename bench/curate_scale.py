"""Curation at scale: time and peak memory of deduplication and hierarchical k-means on one
million synthetic embeddings here, and what a billion images would take on a cluster.

    python bench/curate_scale.py [--n 1000000] [--dim 128] [--quick]

The embeddings are a long-tailed mixture (10,000 Gaussian concepts of Zipf-distributed sizes)
with planted duplicates (1% exact copies, 1% copies with small noise). Each step runs in its own
process, so its peak resident memory (ru_maxrss) is its own:

- ``dedup_ivf``: near-duplicate search (``IVF<4 sqrt n>,Flat``, nprobe 16, k = 16) and grouping;
- ``dedup_ivfpq``: the same through product-quantised codes (32 bytes a vector);
- ``balance``: hierarchical k-means (levels 1000, 100, 10; one resampling round) and balanced
  sampling of 20% of the pool.

The estimate for ``--target-images`` (default one billion) counts FLOPs: the search as
n^1.5 (each query scans nprobe / (4 sqrt n) of the pool), k-means per level as Lloyd iterations
on at most 256 points a centroid plus the assignment of every point (``curate.py balance``'s
default levels at that size), and the embedding pass as the trunk's forward FLOPs (counted on
the meta device, as ``tools/plan.py`` does). The same formulas applied to the runs here give the
FLOP/s this machine reached, a check on them; GPU hours follow at the stated rates.
Results: ``bench/results/curate_scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, write_results  # noqa: E402

LEVELS = [1000, 100, 10]


def generate(path: Path, n: int, dim: int, seed: int = 0) -> dict[str, int]:
    """Write ``n`` x ``dim`` float32 embeddings with planted duplicates to ``path`` (.npy)."""
    rng = np.random.default_rng(seed)
    concepts = 10_000 if n >= 100_000 else max(10, n // 100)
    weights = 1.0 / np.arange(1, concepts + 1)
    centres = rng.normal(0, 1, (concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    originals = n - 2 * (n // 100)
    chunk = 100_000
    for start in range(0, originals, chunk):
        stop = min(start + chunk, originals)
        labels = rng.choice(concepts, stop - start, p=weights / weights.sum())
        out[start:stop] = centres[labels] + 0.6 / math.sqrt(dim) * rng.normal(0, 1, (stop - start, dim))
    copies = rng.choice(originals, 2 * (n // 100), replace=False)
    out[originals : originals + n // 100] = out[copies[: n // 100]]
    noise = 0.02 / math.sqrt(dim) * rng.normal(0, 1, (n // 100, dim)).astype(np.float32)
    out[originals + n // 100 :] = out[copies[n // 100 :]] + noise
    out.flush()
    return {"n": n, "dim": dim, "concepts": concepts, "planted_duplicates": 2 * (n // 100)}


def run_phase(phase: str, path: Path) -> dict[str, Any]:
    """One step on the embeddings at ``path``, in this process."""
    from sslframe.curate.cluster import balanced_sample, hierarchical_kmeans
    from sslframe.curate.dedup import deduplicate
    from sslframe.curate.search import IndexSpec

    x = np.load(path, mmap_mode="r")
    start = time.perf_counter()
    if phase.startswith("dedup"):
        spec = IndexSpec(kind="ivf" if phase == "dedup_ivf" else "ivfpq", nprobe=16, pq_m=32)
        result = deduplicate(np.asarray(x), [], threshold=0.95, k=16, spec=spec)
        details = {k: v for k, v in result.report().items() if k in ("kept", "near_duplicates_removed", "near_groups")}
    else:
        levels = LEVELS if len(x) >= 100_000 else [max(2, len(x) // 500), max(2, len(x) // 5000)]
        hier = hierarchical_kmeans(np.asarray(x), levels, iters=20, resampling_steps=1, resample_size=10)
        rows = balanced_sample(hier, np.asarray(x), len(x) // 5)
        details = {"levels": levels, "selected": len(rows)}
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"phase": phase, "seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2), **details}


def trunk_flops(config: str) -> tuple[float, int]:
    """Forward FLOPs per image of the trunk of experiment ``config`` at its global crop size."""
    import torch

    from sslframe.config import compose_config
    from sslframe.models.trunks import build_trunk
    from sslframe.planner.measure import trunk_forward_flops

    cfg = compose_config("train", [f"config={config}"])
    with torch.device("meta"):
        trunk = build_trunk(cfg.trunk)
    size = int(cfg.transform.global_size)
    return trunk_forward_flops(trunk, size), size


def search_flops(n: int, dim: int, nprobe: int = 16, k: int = 16) -> float:
    """Every vector queried against an IVF index of 4 sqrt(n) lists visiting ``nprobe``: each query
    scans nprobe / nlist of the pool (2 dim FLOPs a vector) plus the coarse quantiser."""
    nlist = 4 * math.sqrt(n)
    return n * (nprobe / nlist * n + nlist) * 2 * dim


def kmeans_flops(n: int, dim: int, levels: list[int], iters: int = 20, resample: int = 10) -> list[float]:
    """Per level: Lloyd iterations on at most 256 points a centroid, the assignment of every
    point, and one resampling round (k-means on ``resample`` points a cluster, reassignment)."""
    out, points = [], n
    for k in levels:
        train = min(points, 256 * k)
        flops = 2 * dim * k * (train * iters + points + min(points, resample * k) * iters + points)
        out.append(flops)
        points = k
    return out


def estimate(rows: list[dict[str, Any]], n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    """FLOPs of each step at ``args.target_images``, and GPU hours at stated rates; the formulas
    are checked against this machine's runs (the FLOP/s they imply here)."""
    from sslframe.curate.cluster import default_levels

    target = args.target_images
    by = {r["phase"]: r for r in rows}
    measured_levels = by["balance"]["levels"]
    here = {
        "dedup_gflops_per_s": round(search_flops(n, dim) / by["dedup_ivf"]["seconds"] / 1e9, 1),
        "kmeans_gflops_per_s": round(sum(kmeans_flops(n, dim, measured_levels)) / by["balance"]["seconds"] / 1e9, 1),
    }
    embed_rate = args.peak_tflops * 1e12 * args.mfu
    faiss_rate = args.fp32_tflops * 1e12 * args.faiss_efficiency
    embed = {}
    for config in args.trunks.split(","):
        flops, size = trunk_flops(config)
        per_gpu = embed_rate / flops
        embed[config] = {
            "image_size": size,
            "gflops_per_image": round(flops / 1e9, 2),
            "images_per_s_per_gpu": round(per_gpu),
            "gpu_hours": round(target / per_gpu / 3600),
        }
    levels = default_levels(target)
    per_level = kmeans_flops(target, dim, levels)
    return {
        "target_images": target,
        "dim": dim,
        "assumptions": (
            f"embedding at {args.peak_tflops} peak TFLOP/s and {args.mfu} MFU (the planner's defaults); faiss "
            f"search and k-means as fp32 GEMMs at {args.fp32_tflops} TFLOP/s x {args.faiss_efficiency}; "
            "FLOPs: 2 per multiply-add"
        ),
        "measured_here": here,
        "embedding": embed,
        "index_memory_gb": {
            "ivf_flat_float32": round(target * (dim * 4 + 8) / 1e9),
            "ivf_pq32_4bit": round(target * (16 + 8) / 1e9),
        },
        "dedup_search": {
            "pflop": round(search_flops(target, dim) / 1e15, 1),
            "gpu_hours": round(search_flops(target, dim) / faiss_rate / 3600, 1),
        },
        "kmeans": {
            "levels": levels,
            "pflop_per_level": [round(f / 1e15, 1) for f in per_level],
            "gpu_hours": round(sum(per_level) / faiss_rate / 3600, 1),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128, help="embedding width (128 keeps k-means here in minutes)")
    parser.add_argument("--quick", action="store_true", help="20k embeddings, results under bench/results/quick")
    parser.add_argument("--phase", default="", help=argparse.SUPPRESS)  # internal: one step in this process
    parser.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--target-images", type=int, default=1_000_000_000)
    parser.add_argument("--trunks", default="seer_regnety_32gf,dino_vit_small", help="experiments whose trunks embed")
    parser.add_argument("--peak-tflops", type=float, default=312.0, help="GPU peak (A100 bf16: 312)")
    parser.add_argument("--mfu", type=float, default=0.3, help="fraction of the peak an embedding pass reaches")
    parser.add_argument("--fp32-tflops", type=float, default=19.5, help="GPU fp32 peak for faiss (A100: 19.5)")
    parser.add_argument("--faiss-efficiency", type=float, default=0.5, help="fraction of it faiss reaches")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "curate_scale")
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.path)))
        return 0
    n = 20_000 if args.quick else args.n
    args.work_dir.mkdir(parents=True, exist_ok=True)
    path = args.work_dir / f"embeddings_{n}x{args.dim}.npy"
    data = generate(path, n, args.dim)
    rows = []
    for phase in ("dedup_ivf", "dedup_ivfpq", "balance"):
        proc = subprocess.run(
            [sys.executable, __file__, "--phase", phase, "--path", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise SystemExit(f"{phase} failed:\n{proc.stderr[-3000:]}")
        rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "n": n, "dim": args.dim})
        print(rows[-1], flush=True)
    extra = {"data": data, "estimate": estimate(rows, n, args.dim, args)}
    path.unlink()
    notes = (
        f"{n} synthetic {args.dim}-d embeddings ({data['planted_duplicates']} planted duplicates), "
        "one process per step; estimate for a billion images in extra.estimate."
    )
    if args.quick:
        out = RESULTS / "quick"
        out.mkdir(parents=True, exist_ok=True)
        (out / "curate_scale.json").write_text(json.dumps({"rows": rows, "extra": extra}, indent=1))
    else:
        write_results("curate_scale", rows, notes, ["phase", "seconds", "peak_rss_gb"], extra)
    print(json.dumps(extra["estimate"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
