#!/usr/bin/env python
"""Write images as tar shards (WebDataset layout) with the index the shards source reads.

python tools/make_shards.py SRC OUT (--max-mb 256 | --per-shard N) [--max-side 512] [--quality 90]
    [--seed 0 | --keep-order]

SRC is an image folder (labels from sub-folders) or a file list (.txt with ``path [label]``
lines, or .npy); OUT a new local folder or fsspec URL. Train on it with
``data=shards data.path=OUT``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import _path  # noqa: F401

from sslframe.cli import run_cli


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="image folder, or file list (.txt / .npy)")
    parser.add_argument("out", help="output folder (local path or fsspec URL)")
    parser.add_argument("--max-mb", type=float, default=0.0, help="target shard size in megabytes")
    parser.add_argument("--per-shard", type=int, default=0, help="images per shard")
    parser.add_argument("--max-side", type=int, default=0, help="re-encode larger images to this longer side")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order the samples are written in")
    parser.add_argument("--keep-order", action="store_true", help="write samples in the source's order")
    args = parser.parse_args(argv)
    from sslframe.data.shard_writer import write_shards
    from sslframe.data.sources import FileListSource, ImageFolderSource

    source = ImageFolderSource(args.src) if args.src.is_dir() else FileListSource(args.src)
    report = write_shards(
        source,
        args.out,
        max_mb=args.max_mb,
        per_shard=args.per_shard,
        max_side=args.max_side,
        quality=args.quality,
        seed=None if args.keep_order else args.seed,
    )
    for key, reason in report.skipped:
        print(f"skipped {key}: {reason}", file=sys.stderr)
    print(
        f"{report.written} images in {len(report.shards)} shards ({report.resized} resized, "
        f"{len(report.skipped)} unreadable skipped); index: {report.index}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
