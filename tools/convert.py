#!/usr/bin/env python
"""Convert checkpoints.

    python tools/convert.py consolidate CHECKPOINT --out trunk.pt [--with-heads] [--safetensors]

``consolidate`` writes one plain state dict of the trunk (and, with --with-heads, the whole
method: heads, prototypes) from a training checkpoint, for evaluation and sharing. The output
loads with ``torch.load(..., weights_only=True)`` (or safetensors) and carries no optimizer state.
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
    sub = parser.add_subparsers(dest="command", required=True)
    consolidate = sub.add_parser("consolidate", help="one plain state dict of the trunk (and heads)")
    consolidate.add_argument("checkpoint", help="a checkpoint folder, its meta.json, or a run dir (newest)")
    consolidate.add_argument("--out", type=Path, required=True)
    consolidate.add_argument("--with-heads", action="store_true", help="keep heads and prototypes too")
    consolidate.add_argument("--safetensors", action="store_true", help="write safetensors instead of torch.save")
    args = parser.parse_args(argv)
    from sslframe.distributed.export import consolidate_checkpoint

    path, count = consolidate_checkpoint(args.checkpoint, args.out, args.with_heads, args.safetensors)
    print(f"wrote {count} tensors to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
