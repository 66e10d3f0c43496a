"""``launcher=local``: train in this process, or in ``launcher.procs`` processes on this machine.

Several processes are started torchrun-style (``torch.distributed.run --standalone``: a
rendezvous on a free local port); each runs tools/train.py with the same overrides and joins the
process group from torchrun's variables, so the trainer is the same one a single process runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from omegaconf import DictConfig

from sslframe.errors import UserError

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "train.py"


def local_procs(launcher: DictConfig) -> int:
    """``launcher.procs``, or one process per visible GPU up to ``gpus_per_node`` when it is 0."""
    if launcher.procs < 0:
        raise UserError(f"bad value for 'launcher.procs': {launcher.procs} (0 picks one per GPU)")
    if launcher.procs:
        return launcher.procs
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(min(gpus, launcher.gpus_per_node), 1)


def torchrun_command(procs: int, overrides: Sequence[str], max_restarts: int = 0) -> list[str]:
    """torchrun around tools/train.py; with ``max_restarts`` a failed or killed worker brings the
    whole group back (torchrun restarts every worker), and trainer.resume=auto (the default)
    continues from the newest checkpoint."""
    if max_restarts < 0:
        raise UserError(f"bad value for 'launcher.max_restarts': {max_restarts} (0 or more)")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        f"--max-restarts={max_restarts}",
        str(TRAIN_SCRIPT),
        *overrides,
    ]


def run_local(cfg: DictConfig, overrides: Sequence[str]) -> int:
    """Train here; with several processes, wait for them and return their exit status."""
    from sslframe.distributed.env import detect_env

    procs = local_procs(cfg.launcher)
    if procs == 1 or detect_env().launcher != "none":
        # One process, or already one of several started by torchrun or srun.
        return train_here(cfg)
    print(f"starting {procs} processes on this machine", flush=True)
    child = subprocess.Popen(torchrun_command(procs, overrides, cfg.launcher.max_restarts))

    def forward(signum: int, _frame: FrameType | None) -> None:
        # torchrun passes SIGTERM on to its workers, which checkpoint and stop.
        child.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, old)


def train_here(cfg: DictConfig) -> int:
    from sslframe.engine.stop import PREEMPTED_EXIT
    from sslframe.engine.trainer import train

    result = train(cfg)
    print(f"run dir: {result.run_dir}")
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint}")
    if result.preempted:
        print(f"stopped by a signal at step {result.final_step}; resume with trainer.resume=auto")
        return PREEMPTED_EXIT
    return 0
