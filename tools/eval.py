#!/usr/bin/env python
"""Evaluate a pretrained checkpoint.

    python tools/eval.py knn checkpoint=RUN_DIR_OR_CHECKPOINT data=fashion_mnist [eval.ks=[20,200]]

Tasks: knn (weighted and majority kNN on frozen trunk features).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help
from sslframe.config import compose_config
from sslframe.config.loader import group_options
from sslframe.errors import UserError


def main(argv: Sequence[str]) -> int:
    if not argv or wants_help(argv):
        print(__doc__)
        return 0 if argv else 2
    task, overrides = argv[0], list(argv[1:])
    tasks = group_options("eval")
    if task not in tasks:
        raise UserError(f"unknown evaluation '{task}'; valid choices: {', '.join(tasks)}")
    cfg = compose_config("eval", [f"eval={task}", *overrides])
    from sslframe.eval.run import run_eval

    result = run_eval(cfg)
    print(json.dumps(result["summary"]))
    print(f"results: {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
