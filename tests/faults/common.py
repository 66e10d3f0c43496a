"""Helpers for the fault tests: tiny real runs as subprocesses, and their metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.distributed.test_torchrun import train_args
from tests.helpers import ROOT


def train_cmd(data: Path, run: Path, *extra: str) -> list[str]:
    """tools/train.py on the tiny config: 32 images, batch 4 per process, 3 epochs, a checkpoint
    every 3 steps."""
    return train_args(data, run, "trainer.max_epochs=3", "trainer.checkpoint_every=3", *extra)


def start(args: Sequence[str], world: int = 1, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if world > 1:
        from tests.distributed.harness import free_port

        args = ["-m", "torch.distributed.run", f"--nproc_per_node={world}", f"--master_port={free_port()}", *args]
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run(args: Sequence[str], world: int = 1, timeout: int = 600, **kwargs: object) -> tuple[int, str]:
    proc = start(args, world, **kwargs)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def trained_run(data: Path, folder: Path, *extra: str, world: int = 1) -> Path:
    """A finished tiny run in ``folder`` (asserting it succeeded)."""
    code, out = run(train_cmd(data, folder, *extra), world)
    assert code == 0, out
    return folder


def losses(run_dir: Path) -> dict[int, float]:
    """Loss per step; a step logged twice (before a crash and after the resume) keeps the last."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in records}


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file():
            try:
                if max(losses(run_dir), default=0) >= step:
                    return
            except ValueError:
                pass  # a line being written
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)
    raise AssertionError(f"run did not reach step {step} in {timeout} s")
