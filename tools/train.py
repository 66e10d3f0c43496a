#!/usr/bin/env python
"""Pretrain a model, here or on a SLURM cluster.

    python tools/train.py config=swav_regnet [key=value ...]
    python tools/train.py config=swav_regnet launcher=slurm launcher.nodes=8 launcher.partition=learn
    python tools/train.py -m config=swav_resnet50 optim.lr=0.6,1.2,2.4 launcher=slurm

``config=`` picks a ready experiment from configs/config/; any key can be overridden
(``optim.lr=0.3 trainer.max_epochs=2 run.dir=runs/try1``); groups are swapped by name
(``trunk=regnet method=simclr data=folder data.path=DIR``). ``launcher=local`` (the default)
trains on this machine (``launcher.procs=N`` processes); ``launcher=slurm`` submits a job.
``-m`` / ``--multirun`` runs one job per point of the sweep overrides (``a,b,c``, ``range()``),
each in its own run dir under ``run.dir``; tools/sweep_status.py shows how they are doing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help
from sslframe.config import compose_config

MULTIRUN_FLAGS = ("-m", "--multirun")


def main(argv: Sequence[str]) -> int:
    if wants_help(argv):
        print(__doc__)
        return 0
    from launch import LAUNCHERS, launch

    overrides = [a for a in argv if a not in MULTIRUN_FLAGS]
    if len(overrides) < len(argv):
        from launch.sweep import run_sweep

        return run_sweep(overrides, lambda point: compose_config("train", point), LAUNCHERS.get)
    return launch(compose_config("train", overrides), overrides)


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
