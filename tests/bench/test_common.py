"""bench/common.py: the commit, command and paths a benchmark result records."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.common import RESULTS, git_commit, relative_paths, shareable_command


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


def test_recorded_commands_and_configs_leave_out_this_machines_folders(tmp_path: Path) -> None:
    """``--work-dir`` only says where scratch files go: the recorded command drops it (both
    spellings) and keeps every other argument, quoted so that a shell reads it back unchanged;
    paths under the work dir are written relative to it, other values as they were."""
    args = ["--methods", "simclr", "--work-dir", str(tmp_path), "--variant", "a b=x=1", f"--work-dir={tmp_path}"]
    command = shareable_command("bench/quality.py", args)
    assert command == "python bench/quality.py --methods simclr --variant 'a b=x=1'"
    config = {"data": {"path": str(tmp_path / "data" / "train"), "size": 28}, "runs": [str(tmp_path / "r"), "/x"]}
    assert relative_paths(config, tmp_path) == {"data": {"path": "data/train", "size": 28}, "runs": ["r", "/x"]}


def test_committed_results_name_no_machine_paths() -> None:
    """Committed result files record commands and configs, and no absolute folder of the machine
    that measured them (``relative_paths``, ``shareable_command``)."""
    absolute = re.compile(r"(?:^|[\s'\"=(`])(/(?:[\w.-]+/)+[\w.-]*)")
    found = {
        f"{path.name}: {match.group(1)}"
        for path in sorted(RESULTS.glob("*.json")) + sorted(RESULTS.glob("*.md"))
        for match in absolute.finditer(path.read_text())
    }
    assert not found, sorted(found)[:5]
