"""Running tools/train.py and tools/sweep_status.py in the test process (no interpreter start-up)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from sslframe.cli import run_cli
from tests.helpers import ROOT, TINY

TOOLS = ROOT / "tools"


def load_tool(name: str) -> ModuleType:
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(f"sslframe_tool_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call_tool(name: str, argv: Sequence[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``tools/<name>.py argv`` run through its CLI wrapper."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(load_tool(name).main, list(argv))
    return code, out.getvalue(), err.getvalue()


def tiny_job(data: Path, run: Path, *extra: str) -> list[str]:
    """Overrides of a tiny CPU run: 32 images, batch 4 per process, a checkpoint every 3 steps."""
    return [
        "config=quickstart",
        *TINY,
        "data=folder",
        f"data.path={data}",
        f"run.dir={run}",
        "data.batch_size=4",
        "trainer.checkpoint_every=3",
        *extra,
    ]
