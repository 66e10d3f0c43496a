"""State and latest metrics of every job of a sweep (or of single run dirs), for sweep_status.

The state comes from SLURM while it remembers the job (``squeue``, then ``sacct`` where
accounting is on), else from the events the job wrote into its run dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch.records import last_metrics, read_events, read_submissions
from launch.sweep import SWEEP_FILE
from sslframe.errors import UserError

# The last event a job's rank 0 wrote, as a state name.
EVENT_STATES = {
    "completed": "COMPLETED",
    "failed": "FAILED",
    "requeue": "REQUEUED",
    "stopped": "STOPPED",
    "gave_up": "GAVE_UP",
}


@dataclass
class JobStatus:
    name: str
    job_id: str
    state: str
    step: int | None
    loss: float | None
    requeues: int


def run_dirs(sweep_dir: Path) -> list[Path]:
    """The point run dirs listed in ``sweep.json``, or the sub-folders holding a launcher.json."""
    if not sweep_dir.is_dir():
        raise UserError(f"no such sweep dir: {sweep_dir}")
    record = sweep_dir / SWEEP_FILE
    if record.is_file():
        try:
            return [sweep_dir / point["dir"] for point in json.loads(record.read_text())["points"]]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{record} is not a sweep record written by tools/train.py -m") from None
    found = sorted(p for p in sweep_dir.iterdir() if (p / "launcher.json").is_file())
    if not found and (sweep_dir / "launcher.json").is_file():
        return [sweep_dir]
    return found


def _query(command: Sequence[str]) -> dict[str, str]:
    """``job id -> state`` from a SLURM command printing ``id|state[|reason]`` lines (the reason
    is kept for pending jobs: ``PENDING (Resources)``); empty on failure."""
    if shutil.which(command[0]) is None:
        return {}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if job_id and state.strip():
            name = state.split()[0]
            # Why a job waits (Resources, Priority, PartitionConfig, ...): the user's next step.
            states[job_id] = f"{name} ({reason.strip()})" if name == "PENDING" and reason.strip() else name
    return states


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    if not job_ids:
        return {}
    ids = ",".join(job_ids)
    states = _query(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ids])
    states.update(_query(["squeue", "-h", "-a", "-o", "%i|%T|%r", "-t", "all", "-j", ids]))
    return states


def event_state(run_dir: Path) -> str:
    events = read_events(run_dir)
    if not events:
        # A point run by launcher=local has no job; a submitted one has not started yet.
        return "SUBMITTED" if read_submissions(run_dir) else "LOCAL"
    last = events[-1]
    if last["event"] == "start":
        return "STARTED"
    return EVENT_STATES.get(last.get("status", ""), "UNKNOWN")


def collect(sweep_dir: Path) -> list[JobStatus]:
    dirs = run_dirs(sweep_dir)
    job_ids = {d: (read_submissions(d) or [{}])[-1].get("job_id", "") for d in dirs}
    states = slurm_states([j for j in job_ids.values() if j])
    rows = []
    for run_dir in dirs:
        job_id = job_ids[run_dir]
        metrics = last_metrics(run_dir) or {}
        starts = [e for e in read_events(run_dir) if e["event"] == "start"]
        rows.append(
            JobStatus(
                name=run_dir.name,
                job_id=job_id or "-",
                state=states.get(job_id) or event_state(run_dir),
                step=metrics.get("step"),
                loss=metrics.get("loss"),
                requeues=max(len(starts) - 1, 0),
            )
        )
    return rows


def format_table(rows: Sequence[JobStatus]) -> str:
    header = ("point", "job", "state", "step", "loss", "requeues")
    table = [header] + [
        (
            r.name,
            r.job_id,
            r.state,
            "-" if r.step is None else str(r.step),
            "-" if r.loss is None else f"{r.loss:.4f}",
            str(r.requeues),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)
