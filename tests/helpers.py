"""Test helpers: small generated image folders, tiny-run overrides, running the tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_image_folder(root: Path, classes: int = 2, per_class: int = 16, size: int = 16, seed: int = 0) -> Path:
    """Class ``c`` images are noisy blobs around intensity ``(c + 1) / (classes + 1)``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = 255 * (c + 1) / (classes + 1)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


# Overrides that make any experiment tiny enough for a CPU test.
TINY = [
    "trunk=resnet",
    "trunk.arch=resnet18",
    "trunk.width_multiplier=0.125",
    "trunk.small_images=true",
    "head.hidden_dims=[32]",
    "head.output_dim=16",
    "transform.global_size=16",
    "transform.local_size=8",
    "transform.local_crops=2",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.log_every=1",
    "trainer.progress=false",
]


def run_tool(tool: str, *args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / tool), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=timeout,
        check=False,
    )


def tiny_config(data: Path, run: Path, *extra: str, config: str = "quickstart") -> Any:
    """The composed train config of a tiny run of the experiment ``config`` on the image folder
    ``data``, writing to ``run``; ``extra`` overrides come last."""
    from sslframe.config import compose_config

    return compose_config(
        "train", [f"config={config}", *TINY, "data=folder", f"data.path={data}", f"run.dir={run}", *extra]
    )


def assert_resumes_exactly(overrides: list[str], folder: Path, steps: int = 4, stop: int = 2) -> list[float]:
    """A train run of ``overrides`` for ``steps`` steps, and the same run stopped after ``stop``
    steps and resumed from its checkpoint: the logged losses must be equal, bit for bit. Returns
    the uninterrupted run's losses."""
    import json

    from sslframe.config import compose_config
    from sslframe.engine.trainer import Trainer

    def run(name: str, until: int) -> list[float]:
        cfg = compose_config("train", [*overrides, f"run.dir={folder / name}", f"trainer.max_steps={until}"])
        Trainer(cfg).fit()
        lines = (folder / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    whole = run("whole", steps)
    run("split", stop)
    assert run("split", steps) == whole and len(whole) == steps
    return whole
