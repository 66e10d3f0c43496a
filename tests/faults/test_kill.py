"""Hard kill: SIGKILL at a random step, restart with trainer.resume=auto, and the losses from
there on are bit-identical to an uninterrupted run's (CPU), at world size 1 and 2."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest

from sslframe.distributed.checkpoint import latest_checkpoint
from tests.faults.common import losses, run, start, train_cmd, wait_for_step


def kill_step(seed: int, steps: int) -> int:
    """The logged step a kill waits for, drawn from ``seed``: after a few steps, and with at least a
    third of the run left, since the run goes on while the log is polled and the signal lands (a kill
    at step 10 of 12 once found all 12 logged)."""
    return random.Random(seed).randint(4, steps - max(2, steps // 3))


@pytest.mark.parametrize("world", [1, 2])
def test_sigkill_then_resume_matches_uninterrupted(
    fault_data: Path, tmp_path: Path, world: int, request: pytest.FixtureRequest
) -> None:
    # 32 images, batch 4 per rank: 24 steps at world size 1, 12 at world size 2 (3 epochs).
    steps = 24 // world
    reference = request.getfixturevalue("reference" if world == 1 else "reference_two")
    assert sorted(reference) == list(range(1, steps + 1))
    image_folder = fault_data

    seed = random.randrange(1 << 30)
    kill_at = kill_step(seed, steps)
    # Printed, so a failure can be replayed with the same kill step (pytest shows it on failure).
    print(f"kill seed {seed}: SIGKILL once step {kill_at} of {steps} is logged")
    cut = tmp_path / "cut"
    proc = start(train_cmd(image_folder, cut), world)
    wait_for_step(cut, kill_at, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: torchrun and its workers
    proc.wait(timeout=60)
    # The kill landed mid-run: the process died of the signal, not of finishing.
    assert proc.returncode == -signal.SIGKILL, f"seed {seed}: exit status {proc.returncode}"
    newest = latest_checkpoint(cut / "checkpoints")
    assert max(losses(cut)) < steps, f"seed {seed}: the run had already finished"

    code, out = run(train_cmd(image_folder, cut, "trainer.resume=auto"), world)
    assert code == 0, out
    resumed_from = int(newest.name.split("_")[1]) if newest is not None else 0
    assert resumed_from < steps, f"seed {seed}: resumed from the final step {resumed_from}"
    after = {s: v for s, v in losses(cut).items() if s > resumed_from}
    assert sorted(after) == list(range(resumed_from + 1, steps + 1)), f"seed {seed}"
    assert after == {s: reference[s] for s in after}, f"killed at step >= {kill_at} (seed {seed})"


def worker_pid(run_dir: Path, rank: int) -> int | None:
    """The pid of the training process of ``rank`` whose command line names ``run_dir``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            str(run_dir).encode() in cmdline
            and f"RANK={rank}".encode() in env
            and b"torch.distributed.run" not in cmdline
        ):
            return int(entry.name)
    return None


def test_a_killed_worker_brings_the_group_back_and_the_run_resumes(
    fault_data: Path, tmp_path: Path, reference_two: dict[int, float]
) -> None:
    """launcher.procs=2 launcher.max_restarts=1: SIGKILL one worker mid-run; torchrun restarts
    both, they resume from the newest checkpoint, and the losses from there on are the
    uninterrupted run's."""
    steps = 12
    seed = random.randrange(1 << 30)
    kill_at = kill_step(seed, steps)
    print(f"kill seed {seed}: SIGKILL rank 1 once step {kill_at} of {steps} is logged")
    cut = tmp_path / "cut"
    proc = start(train_cmd(fault_data, cut, "launcher.procs=2", "launcher.max_restarts=1"))
    try:
        wait_for_step(cut, kill_at, proc)
        pid = worker_pid(cut, 1)
        assert pid is not None, "no worker of rank 1 found"
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"seed {seed}:\n{out}"
    resumed = [line for line in out.splitlines() if "resumed from" in line]
    assert len(resumed) == 1, f"seed {seed}: expected one resume:\n{out}"
    resumed_from = int(resumed[0].split("at step")[1].split()[0])
    assert resumed_from < steps, f"seed {seed}: the run had already finished"
    final = losses(cut)
    assert sorted(final) == list(range(1, steps + 1)), f"seed {seed}"
    assert final == reference_two, f"killed at step >= {kill_at} (seed {seed})"
