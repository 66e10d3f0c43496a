#!/usr/bin/env python
"""Prepare a bundled dataset as an image folder.

python tools/prepare_data.py fashion_mnist --out data/fashion_mnist [--idx-dir DIR] [--limit N]
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
    parser.add_argument("dataset", choices=["fashion_mnist"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--idx-dir", type=Path, default=None, help="folder with the IDX .gz files")
    parser.add_argument("--limit", type=int, default=0, help="keep only the first N images of each split")
    args = parser.parse_args(argv)
    from sslframe.data.fashion_mnist import prepare

    counts = prepare(args.out, args.idx_dir, args.limit)
    print(f"fashion_mnist ready in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
