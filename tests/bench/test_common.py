"""bench/common.py: the commit a benchmark result records."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.common import git_commit


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_result_files_do_not_make_the_tree_dirty_and_other_changes_do(tmp_path: Path) -> None:
    """A benchmark resumed over several sittings finds its own result files already changed; only a
    change to anything else (code, configs, README) marks the commit ``+dirty``."""
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "quality.json").write_text("{}\n")
    (tmp_path / "train.py").write_text("print()\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "start")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "bench" / "results" / "quality.json").write_text('{"rows": []}\n')
    (tmp_path / "bench" / "results" / "new.md").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "train.py").write_text("print('changed')\n")
    assert git_commit(tmp_path) == f"{head}+dirty"
