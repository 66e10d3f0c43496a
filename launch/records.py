"""What launchers write into a run dir, and reading it back for status reports.

``<run.dir>/launcher.json``: one entry per submission (job id, log files, time, command).
``<run.dir>/slurm/events.jsonl``: one line per start and end of the job's rank 0, so a run dir
tells how often a job was requeued and how it ended even when SLURM has forgotten the job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LAUNCHER_FILE = "launcher.json"
EVENTS_FILE = Path("slurm") / "events.jsonl"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record_submission(run_dir: Path, entry: dict[str, Any]) -> Path:
    """Append a submission to ``launcher.json`` (written to a temporary name, then renamed)."""
    path = run_dir / LAUNCHER_FILE
    jobs = read_submissions(run_dir)
    jobs.append(entry)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"jobs": jobs}, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_submissions(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / LAUNCHER_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["jobs"])
    except (ValueError, KeyError, TypeError):
        return []


def append_event(run_dir: Path, event: str, **fields: Any) -> None:
    path = run_dir / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"event": event, "time": now_iso(), **fields}) + "\n")


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    return _read_jsonl(run_dir / EVENTS_FILE)


def last_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The newest record of ``metrics.jsonl`` (None before the first logged step)."""
    records = _read_jsonl(run_dir / "metrics.jsonl")
    return records[-1] if records else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return records
