#!/usr/bin/env python
"""Evaluate a pretrained checkpoint.

    python tools/eval.py TASK checkpoint=RUN_DIR_OR_CHECKPOINT data=fashion_mnist [eval.KEY=VALUE ...]

Tasks (configs/eval/TASK.yaml):
  extract   trunk features of data.path and data.val_path in safetensors shards; under torchrun
            every rank writes its share (torchrun --nproc_per_node=N tools/eval.py extract ...)
            (into a folder that already holds features only with eval.overwrite=true)
  knn       weighted kNN top-1 for several k (eval.ks=[20,200])
  linear    linear probe: SGD/LARS, cosine schedule, eval.batch_norm, eval.augment; top-1 and top-5
  lowshot   probes on 1%/10%/N-per-class subsets over several seeds (eval.probe=linear|knn)
  finetune  whole trunk plus a new head (eval.layer_decay < 1: layer-wise learning-rate decay)

knn, linear and lowshot read extracted features with eval.features=DIR instead of images;
eval.random_init=true evaluates the same architecture untrained (a baseline);
checkpoint=FILE eval.layout=dino eval.arch=resnet50 evaluates another project's weights. Results go to
RUN_DIR/eval/TASK.json (or out=FILE); one summary line is printed.
"""

from __future__ import annotations

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
    print(result["summary"])
    print(f"results: {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
