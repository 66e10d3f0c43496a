#!/usr/bin/env python
"""Convert checkpoints.

    python tools/convert.py consolidate CHECKPOINT --out trunk.pt [--with-heads] [--safetensors]
                                                   [--encoder student|teacher]

``consolidate`` writes one plain state dict of the trunk (and, with --with-heads, the whole
method: heads, prototypes) from a training checkpoint, for evaluation and sharing. The output
loads with ``torch.load(..., weights_only=True)`` (or safetensors) and carries no optimizer state.
``--encoder teacher`` writes the trunk's momentum copy (DINO's teacher, BYOL's target, I-JEPA's
target encoder) instead of the trained trunk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import _path  # noqa: F401

from sslframe.cli import run_cli
from sslframe.config.schema.eval import ENCODERS


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    consolidate = sub.add_parser("consolidate", help="one plain state dict of the trunk (and heads)")
    consolidate.add_argument("checkpoint", help="a checkpoint folder, its meta.json, or a run dir (newest)")
    consolidate.add_argument("--out", type=Path, required=True)
    consolidate.add_argument("--with-heads", action="store_true", help="keep heads and prototypes too")
    consolidate.add_argument("--safetensors", action="store_true", help="write safetensors instead of torch.save")
    consolidate.add_argument(
        "--encoder",
        choices=ENCODERS,
        default="student",
        help="teacher: the method's momentum (EMA) copy of the trunk (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA)",
    )
    args = parser.parse_args(argv)
    from sslframe.distributed.export import consolidate_checkpoint

    path, count = consolidate_checkpoint(args.checkpoint, args.out, args.with_heads, args.safetensors, args.encoder)
    print(f"wrote {count} tensors to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
