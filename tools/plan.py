#!/usr/bin/env python
"""Plan a training run: will it fit on the GPUs, and how long will it take?

    python tools/plan.py config=seer_regnet_10b launcher.nodes=64 launcher.gpus_per_node=8 \\
        [plan.gpu_memory_gb=40] [plan.peak_tflops=312] [plan.mfu=0.3] [plan.images=1000000000]

Builds the model on the meta device (no memory is allocated), measures parameters, FLOPs and
activation bytes on the real modules, and prints memory per GPU under DDP and FSDP, with and
without activation checkpointing, whether the config fits, and the estimated throughput and
wall time. The full report is written as JSON to plan.out (default <run.dir>/plan.json).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import _path  # noqa: F401

from sslframe.cli import run_cli, wants_help
from sslframe.config import compose_config


def main(argv: Sequence[str]) -> int:
    if wants_help(argv):
        print(__doc__)
        return 0
    cfg = compose_config("plan", argv)
    from sslframe.planner.plan import make_plan, summary

    report = make_plan(cfg)
    out = Path(cfg.plan.out or Path(cfg.run.dir) / "plan.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(summary(report))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
