"""The guides in docs/guides/ work as written: every ``bash`` block of a guide runs, in order, in
one scratch folder holding ``my_images/`` (small images in two class folders) and links to the
repository's ``tools/`` and ``configs/``, with this environment's ``python`` and ``sslframe`` on
PATH. Blocks after ``<!-- needs: slurm -->`` run where the SLURM test cluster is up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.slurm.cluster import cluster_skip_reason

GUIDES = sorted(p for p in (ROOT / "docs" / "guides").glob("*.md") if p.name != "README.md")
FENCE = re.compile(r"(<!-- needs: (?P<needs>\w+) -->\n)?```bash\n(?P<body>.*?)```", re.S)


@dataclass
class Block:
    body: str
    needs: str | None


def blocks(guide: Path) -> list[Block]:
    return [Block(m["body"], m["needs"]) for m in FENCE.finditer(guide.read_text())]


def scratch(tmp_path: Path) -> Path:
    """``my_images/``: 2 classes x 24 images of 32 px (stripes of a class-specific period, with
    noise), plus links to tools/ and configs/."""
    rng = np.random.default_rng(0)
    for label, period in (("stripes_4", 4), ("stripes_8", 8)):
        folder = tmp_path / "my_images" / label
        folder.mkdir(parents=True)
        for i in range(24):
            x = np.arange(32)
            pattern = ((x[None, :] + i) // period % 2) * 160 + rng.integers(0, 60, (32, 32))
            Image.fromarray(np.repeat(pattern[:, :, None], 3, axis=2).astype(np.uint8)).save(folder / f"{i:02d}.png")
    for name in ("tools", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def run_guide(guide: Path, work: Path, with_slurm: bool) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks(guide):
        if block.needs and not with_slurm:
            continue
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.body],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{guide.name}: this block failed:\n{block.body}\n{proc.stdout}\n{proc.stderr}"


def test_every_guide_has_commands_and_the_index_lists_it() -> None:
    index = (ROOT / "docs" / "guides" / "README.md").read_text()
    assert GUIDES
    for guide in GUIDES:
        assert any(not b.needs for b in blocks(guide)), f"{guide.name} has no command a test runs"
        assert f"({guide.name})" in index, f"docs/guides/README.md does not list {guide.name}"


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_commands_run(guide: Path, tmp_path: Path) -> None:
    run_guide(guide, scratch(tmp_path), with_slurm=False)


SLURM_GUIDES = [g for g in GUIDES if any(b.needs == "slurm" for b in blocks(g))]


@pytest.mark.parametrize("guide", SLURM_GUIDES, ids=[g.stem for g in SLURM_GUIDES])
def test_guide_commands_run_on_the_slurm_test_cluster(guide: Path, tmp_path: Path) -> None:
    reason = cluster_skip_reason()
    if reason:
        pytest.skip(reason)
    run_guide(guide, scratch(tmp_path), with_slurm=True)
