"""Writing benchmark results as JSON and a Markdown table."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or "?",
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def write_results(name: str, rows: list[dict[str, Any]], notes: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows, "notes": notes}, indent=1))
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append(
            "| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |"
        )
    path = RESULTS / f"{name}.md"
    path.write_text(f"# {name}\n\n{notes}\n\n" + "\n".join(lines) + "\n")
    return path
