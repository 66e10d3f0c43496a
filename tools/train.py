#!/usr/bin/env python
"""Pretrain a model.

    python tools/train.py config=swav_regnet [key=value ...]

``config=`` picks a ready experiment from configs/config/; any key can be overridden
(``optim.lr=0.3 trainer.max_epochs=2 run.dir=runs/try1``); groups are swapped by name
(``trunk=regnet method=simclr data=folder data.path=DIR``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help
from sslframe.config import compose_config


def main(argv: Sequence[str]) -> int:
    if wants_help(argv):
        print(__doc__)
        return 0
    cfg = compose_config("train", argv)
    from sslframe.engine.trainer import PREEMPTED_EXIT, train

    result = train(cfg)
    print(f"run dir: {result.run_dir}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    if result.preempted:
        print(f"stopped by a signal at step {result.final_step}; resume with trainer.resume=auto")
        return PREEMPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
