#!/usr/bin/env python
"""Write the pictures of a training run as PNGs under RUN_DIR/plots.

    python tools/plot.py RUN_DIR [--max-points 2000] [--encoder student|teacher]

loss_lr.png (loss and learning rate against steps), knn.png (online kNN top-1, when the run
logged it), collapse.png (embedding std and effective rank, when logged) and embeddings.png
(a 2-D map of test-set trunk features coloured by class: UMAP, else t-SNE, else PCA; with
``--encoder teacher``, embeddings_teacher.png of the trunk's momentum copy).
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
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--max-points", type=int, default=2000, help="images in the embedding map")
    parser.add_argument(
        "--encoder",
        choices=ENCODERS,
        default="student",
        help="teacher: map the method's momentum (EMA) copy of the trunk (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA)",
    )
    args = parser.parse_args(argv)
    from sslframe.eval.plots import plot_run

    for path in plot_run(args.run_dir, args.max_points, args.encoder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
