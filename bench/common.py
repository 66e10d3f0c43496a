"""Writing benchmark results as JSON and a Markdown table, and the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def quick_mode() -> bool:
    """``BENCH_QUICK=1``: a smoke run (fewer cases, repeats and steps)."""
    return os.environ.get("BENCH_QUICK", "0") not in ("", "0")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> dict[str, Any]:
    info = {
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or "?",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    keys = columns or list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [row.get(k, "") for k in keys]
        text = (f"{c:.3g}" if isinstance(c, float) else "—" if c is None else str(c) for c in cells)
        lines.append("| " + " | ".join(text) + " |")
    return "\n".join(lines)


def git_commit(root: Path = RESULTS.parents[1]) -> str:
    """The checked-out commit, ``+dirty`` when a tracked file differs from it. The result files
    under ``bench/results/`` do not count: a benchmark resumed over several sittings (or run
    after another in one sitting) finds them already changed by itself."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# Options that only say where a benchmark keeps its scratch files on this machine: left out of
# the commands that results record (committed files name no machine's paths).
LOCAL_OPTIONS = ("--work-dir",)


def shareable_command(script: str, arguments: list[str]) -> str:
    """``python SCRIPT ARGUMENTS`` quoted as a shell needs it, so it can be run again as written,
    without the options of ``LOCAL_OPTIONS`` (``--opt VALUE`` or ``--opt=VALUE``)."""
    kept: list[str] = []
    skip = False
    for arg in arguments:
        if skip:
            skip = False
        elif arg in LOCAL_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LOCAL_OPTIONS)):
            kept.append(arg)
    return shlex.join(["python", script, *kept])


def relative_paths(value: Any, base: Path) -> Any:
    """``value`` (nested dicts, lists, strings) with every path under ``base`` written relative to
    it, so a recorded config names no machine's folders."""
    prefix = str(base.resolve()).rstrip("/") + "/"
    if isinstance(value, dict):
        return {k: relative_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, base) for v in value]
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def provenance() -> dict[str, str]:
    """The command, commit and date of a result (README figures name where they come from)."""
    root = RESULTS.parents[1]
    script = Path(sys.argv[0]).resolve()
    where = script.relative_to(root) if script.is_relative_to(root) else script.name
    return {
        "command": shareable_command(str(where), sys.argv[1:]),
        "commit": git_commit(root),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_results(
    name: str,
    rows: list[dict[str, Any]],
    notes: str,
    columns: list[str] | None = None,
    extra: Any = None,
    measured: dict[str, Any] | None = None,
) -> Path:
    """``bench/results/<name>.json`` (every field, the machine, command, commit and date) and
    ``<name>.md`` (``columns`` of each row). ``measured``: the machine and provenance to keep, for
    results rewritten without measuring anything (otherwise this process's)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    where = {"machine": machine(), **provenance()}
    if measured is not None:
        where = {k: measured[k] for k in ("machine", "command", "commit", "date") if k in measured} or where
    payload = {**where, "rows": rows, "notes": notes, "columns": columns or list(rows[0])}
    if extra is not None:
        payload["extra"] = extra
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    path = RESULTS / f"{name}.md"
    path.write_text(f"# {name}\n\n{notes}\n\n{markdown_table(rows, columns)}\n")
    return path
