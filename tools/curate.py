#!/usr/bin/env python
"""Curate an uncurated image pool: embed it, remove duplicates, balance its concepts, or keep
what resembles a curated seed set. The output trains directly (a file list, or tar shards).

    python tools/curate.py embed checkpoint=RUN data=folder data.path=POOL eval.out_dir=FEATS \\
        [eval.piece_size=4096 eval.batch_size=256 eval.layer=-1]     # torchrun: ranks share it
    python tools/curate.py dedup    --features FEATS --out OUT1 [--threshold 0.95 --k 16]
    python tools/curate.py balance  --features FEATS --after OUT1 --out OUT2 --target N \\
        [--levels 1000,100,10 --resampling-steps 1 --resample-size 10 --within random]
    python tools/curate.py retrieve --features FEATS --seeds SEED_FEATS --out OUT --target N

embed   features of every image of a folder, file list or tar shards (data=folder|filelist|shards)
        with a run's checkpoint (eval.random_init=true: its untrained network; checkpoint=FILE
        eval.layout=dino eval.arch=... another project's weights); resumable after a kill, each
        rank taking its share of pieces under torchrun; stores each image's content hash
dedup   exact duplicates (same bytes) and near duplicates (cosine >= --threshold among the --k
        nearest neighbours), one image kept per group
balance hierarchical k-means with resampling, then balanced sampling of --target images
        (Vo et al. 2024)
retrieve the pool images nearest to each embedded seed image, --target in all (DINOv2, sec. 3)

Each step writes OUT/selection.npy, OUT/report.json and OUT/files.txt (train with
data=filelist data.path=OUT/files.txt); --shards DIR --per-shard N also writes tar shards
(data=shards data.path=DIR), the output for a tar-shard pool. --after OUT1 starts from an
earlier step's selection. Nearest neighbours and k-means run in faiss: --index auto|flat|ivf|ivfpq.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help
from sslframe.errors import UserError

STEPS = ("embed", "dedup", "balance", "retrieve")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, help="folder written by `curate.py embed`")
    parser.add_argument("--out", required=True, help="folder for selection.npy, files.txt, report.json")
    parser.add_argument("--after", default="", help="start from this earlier step's selection (its OUT)")
    parser.add_argument("--shards", default="", help="also write the selection as tar shards here")
    parser.add_argument("--per-shard", type=int, default=0, help="images per tar shard (with --shards)")
    parser.add_argument("--index", default="auto", help="nearest-neighbour index: auto, flat, ivf, ivfpq")
    parser.add_argument("--nprobe", type=int, default=16, help="inverted lists visited per query (ivf, ivfpq)")
    parser.add_argument("--pq-m", type=int, default=16, help="4-bit sub-quantisers per vector (ivfpq)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    dedup = sub.add_parser("dedup", help="remove exact and near duplicates")
    _common(dedup)
    dedup.add_argument("--threshold", type=float, default=0.95, help="cosine similarity of near duplicates")
    dedup.add_argument("--k", type=int, default=16, help="neighbours searched per image")
    balance = sub.add_parser("balance", help="hierarchical k-means and balanced sampling")
    _common(balance)
    balance.add_argument("--target", type=int, required=True, help="images to keep")
    balance.add_argument("--levels", default="", help="clusters per level, finest first (default: from the pool size)")
    balance.add_argument("--iters", type=int, default=20, help="k-means iterations")
    balance.add_argument("--resampling-steps", type=int, default=1, help="resampling rounds per level")
    balance.add_argument(
        "--resample-size", type=int, default=10, help="points nearest each centroid kept when resampling"
    )
    balance.add_argument("--within", default="random", help="sampling inside a bottom cluster: random, closest")
    balance.add_argument("--seed", type=int, default=0)
    retrieve = sub.add_parser("retrieve", help="pool images nearest to a seed set")
    _common(retrieve)
    retrieve.add_argument("--seeds", required=True, help="embedding of the seed images (`curate.py embed`)")
    retrieve.add_argument("--target", type=int, required=True, help="images to keep")
    return parser


def main(argv: Sequence[str]) -> int:
    if not argv or (argv[0] not in STEPS and wants_help(argv)):
        print(__doc__)
        return 0 if argv else 2
    step = argv[0]
    if step not in STEPS:
        raise UserError(f"unknown curation step '{step}'; valid choices: {', '.join(STEPS)}")
    if step == "embed":
        if wants_help(argv[1:]):
            print(__doc__)
            return 0
        from sslframe.config import compose_config
        from sslframe.eval.run import run_eval

        result = run_eval(compose_config("eval", ["eval=embed", *argv[1:]]))
        print(result["summary"])
        print(f"results: {result['path']}")
        return 0
    args = _parser().parse_args(list(argv))
    from sslframe.curate.search import IndexSpec
    from sslframe.curate.steps import load_pool, write_step

    started = time.monotonic()
    pool = load_pool(args.features, args.after or None)
    spec = IndexSpec(kind=args.index, nprobe=args.nprobe, pq_m=args.pq_m)
    params = {k: v for k, v in vars(args).items() if k not in ("features", "out", "after", "step")}
    if step == "dedup":
        from sslframe.curate.dedup import deduplicate

        result = deduplicate(pool.features, pool.hashes, args.threshold, args.k, spec)
        rows, counts = result.keep.nonzero()[0], result.report()
    elif step == "balance":
        from sslframe.curate.cluster import balanced_sample, cluster_report, default_levels, hierarchical_kmeans

        levels = [int(v) for v in args.levels.split(",")] if args.levels else default_levels(len(pool.indices))
        params["levels"] = levels
        hier = hierarchical_kmeans(
            pool.features, levels, args.iters, args.resampling_steps, args.resample_size, args.seed
        )
        rows = balanced_sample(hier, pool.features, args.target, args.seed, args.within)
        counts = cluster_report(hier, rows)
    else:
        from sslframe.curate.retrieve import retrieve
        from sslframe.curate.steps import load_pool as load_seeds

        seeds = load_seeds(args.seeds)
        rows, counts = retrieve(pool.features, seeds.features, args.target, spec)
    report = write_step(args.out, pool, rows, step, params, counts, args.shards, args.per_shard, started)
    print(f"{step}: kept {report['selected']} of {report['input']} images; report: {args.out}/report.json")
    if report["files"]:
        print(f"train on it: data=filelist data.path={report['files']}")
    if report.get("shards"):
        print(f"train on it: data=shards data.path={report['shards']['index']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
