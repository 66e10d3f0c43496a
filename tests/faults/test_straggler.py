"""A straggler shows in the metrics: rank 1's data loader is stopped (SIGSTOP) for 3 s, and
the logged per-rank numbers name rank 1 as the rank that waited for data, by about that long,
while rank 0 spent the time waiting for rank 1 inside the step (two real processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.faults.common import start, train_cmd, wait_for_step
from tests.faults.test_hang import worker_pids

STALL_S = 3.0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_the_rank_with_a_slow_loader_is_named(fault_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    extra = ("trainer.max_epochs=1000", "data.num_workers=1", "data.persistent_workers=true")
    proc = start(train_cmd(fault_data, run_dir, *extra), world=2)
    try:
        wait_for_step(run_dir, 3, proc)
        ranks = worker_pids(proc.pid)
        (loader,) = children(ranks[1])  # rank 1's one loader worker
        os.kill(loader, signal.SIGSTOP)
        time.sleep(STALL_S)
        os.kill(loader, signal.SIGCONT)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        wait_for_step(run_dir, records[-1]["step"] + 6, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    stalled = max(records, key=lambda r: r["data_wait_s_max"])
    print({k: v for k, v in stalled.items() if k.startswith(("data_wait", "step_s", "memory"))})
    # Rank 1 waited for its batch for most of the stall (its loader had up to two batches ready);
    # rank 0 had its data and waited for rank 1 in the step's collectives instead.
    assert stalled["data_wait_s_max_rank"] == 1 and stalled["data_wait_s_max"] >= STALL_S - 1.5
    assert stalled["data_wait_s_min"] < 0.5 and stalled["step_s_max"] >= STALL_S - 1.5
    assert stalled["memory_gb_max"] > 0.05 and stalled["memory_gb_min"] > 0.05
    # Other steps (the first one's wait includes starting the loader workers) wait far less.
    quiet = [r for r in records if r is not stalled and r["step"] > 1]
    assert sorted(r["data_wait_s_max"] for r in quiet)[len(quiet) // 2] < 0.5
