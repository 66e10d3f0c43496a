"""A rank that stops answering (SIGSTOP, as a hung or lost node looks to its peers) ends the
others after ``distributed.timeout_s`` with one line naming the rank, the step and what the loop
was doing, instead of holding the job until its time limit (two real processes, gloo)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.faults.common import start, train_cmd, wait_for_step

TIMEOUT_S = 8


def worker_pids(launcher: int) -> dict[int, int]:
    """RANK -> pid of torchrun's workers (children of ``launcher``)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != launcher:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(entry.name)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_stopped_rank_ends_the_job_with_its_name(fault_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(
        train_cmd(fault_data, run_dir, f"distributed.timeout_s={TIMEOUT_S}", "trainer.max_epochs=1000"), world=2
    )
    try:
        wait_for_step(run_dir, 3, proc)
        pids = worker_pids(proc.pid)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[1], signal.SIGSTOP)
        stopped = time.monotonic()
        while alive(pids[0]) and time.monotonic() - stopped < TIMEOUT_S + 120:
            time.sleep(0.2)
        waited = time.monotonic() - stopped
        assert not alive(pids[0]), f"rank 0 still waits {waited:.0f} s after rank 1 stopped"
        os.kill(pids[1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    # Not before the timeout, and not long after it (interpreter start-up of nothing: it exits).
    assert TIMEOUT_S - 1 <= waited <= TIMEOUT_S + 60, waited
    line = next((ln for ln in out.splitlines() if ln.startswith("error: rank 0: a collective")), None)
    assert line is not None, out
    print(line, f"(after {waited:.1f} s)")
    assert f"distributed.timeout_s={TIMEOUT_S} s" in line
    assert "rank 1 has not answered for" in line
    assert "at step" in line and "resume with trainer.resume=auto" in line
