#!/usr/bin/env python
"""Show the state and latest metrics of each job of a sweep.

    python tools/sweep_status.py SWEEP_DIR [--json]

SWEEP_DIR is the ``run.dir`` of ``tools/train.py -m ...`` (it holds sweep.json); a single run
dir of a submitted job works too. One line per job: point, job id, state, last step, loss,
requeues.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help


def main(argv: Sequence[str]) -> int:
    args = [a for a in argv if a != "--json"]
    if len(args) != 1 or wants_help(argv):
        print(__doc__)
        return 0 if wants_help(argv) else 2
    from launch.status import collect, format_table

    rows = collect(Path(args[0]))
    if "--json" in argv:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
