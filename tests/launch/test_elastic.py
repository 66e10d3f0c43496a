"""A job that may lose nodes (``launcher.min_nodes``): its sbatch script, and what
``launch.elastic`` does after the job step ends, with ``scontrol`` and ``srun`` stood in for by
scripts that answer from files (the real cluster test is tests/slurm/test_two_nodes.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from launch import elastic
from launch.records import read_events
from launch.slurm import make_executor
from sslframe.config import compose_config
from sslframe.errors import UserError

FAKE_SCONTROL = """#!/bin/sh
# scontrol show hostnames a,b | scontrol show job ID (the allocation's node list from a file)
if [ "$2" = hostnames ]; then echo "$3" | tr ',' '\\n'; exit 0; fi
echo "JobId=$3 JobName=x"
echo "   NodeList=$(cat "$FAKE_DIR/allocation")"
"""
FAKE_SRUN = """#!/bin/sh
# Records its arguments and the variables launch.elastic sets; exits with the status on file.
python3 -c 'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "continued": \
os.environ.get("SSLFRAME_CONTINUED_AFTER_NODE_LOSS"), "master": os.environ.get("MASTER_ADDR"), \
"ntasks": os.environ.get("SLURM_NTASKS")}))' "$@" >> "$FAKE_DIR/srun_calls"
exit "$(cat "$FAKE_DIR/srun_status")"
"""


def write_tool(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_tool(bin_dir / "scontrol", FAKE_SCONTROL)
    write_tool(bin_dir / "srun", FAKE_SRUN)
    write_tool(bin_dir / "sbatch", "#!/bin/sh\nexit 1\n")
    (tmp_path / "srun_status").write_text("0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n1,n2,n3")
    monkeypatch.setenv("SLURM_NTASKS", "6")  # the first step's: must not reach the new one
    return tmp_path


def srun_calls(fake: Path) -> list[dict]:
    path = fake / "srun_calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run_elastic(fake: Path, status: int, min_nodes: int) -> int:
    return elastic.main(
        [
            *("--status", str(status), "--tasks-per-node", "2", "--min-nodes", str(min_nodes)),
            *("--run-dir", str(fake / "run"), "--", "--output", "log_%t", "python", "-m", "x"),
        ]
    )


def test_a_lost_node_restarts_the_step_on_the_nodes_left(fake_slurm: Path) -> None:
    (fake_slurm / "allocation").write_text("n1,n3")
    assert run_elastic(fake_slurm, status=1, min_nodes=2) == 0
    [call] = srun_calls(fake_slurm)
    assert call["argv"][:5] == ["--overlap", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--nodelist=n1,n3"]
    assert call["argv"][5:] == ["--output", "log_%t", "python", "-m", "x"]
    # The tasks know they continue a run (TrainJob resumes), and rank 0 is on a node left.
    assert call["continued"] == "1" and call["master"] == "n1" and call["ntasks"] is None
    [event] = read_events(fake_slurm / "run")
    assert (event["event"], event["lost"], event["nodes"], event["tasks"]) == ("node_lost", ["n2"], ["n1", "n3"], 4)


def test_a_failure_that_lost_no_node_ends_the_job_with_its_status(fake_slurm: Path) -> None:
    (fake_slurm / "allocation").write_text("n1,n2,n3")
    assert run_elastic(fake_slurm, status=3, min_nodes=1) == 3
    assert srun_calls(fake_slurm) == [] and read_events(fake_slurm / "run") == []
    # A step that succeeded is not looked at at all.
    assert run_elastic(fake_slurm, status=0, min_nodes=1) == 0


def test_fewer_nodes_than_min_nodes_gives_up(fake_slurm: Path) -> None:
    (fake_slurm / "allocation").write_text("n3")
    assert run_elastic(fake_slurm, status=1, min_nodes=2) == 1
    assert srun_calls(fake_slurm) == []
    [event] = read_events(fake_slurm / "run")
    assert (event["event"], event["status"], event["nodes"]) == ("end", "node_lost", ["n3"])


def test_a_second_loss_in_the_restarted_step_shrinks_again(fake_slurm: Path) -> None:
    (fake_slurm / "allocation").write_text("n1,n2")
    (fake_slurm / "srun_status").write_text("1")
    # The restarted step fails too, and by then n2 is gone as well; with min_nodes=1 the job
    # goes on with n1 alone, and when that step fails without losing a node, it ends.
    allocations = iter(["n1,n2", "n1", "n1"])
    original = elastic.allocation

    def next_allocation(job_id: str) -> list[str]:
        (fake_slurm / "allocation").write_text(next(allocations))
        return original(job_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(elastic, "allocation", next_allocation)
        assert run_elastic(fake_slurm, status=1, min_nodes=1) == 1
    calls = srun_calls(fake_slurm)
    assert [c["argv"][1:3] for c in calls] == [["--nodes=2", "--ntasks=4"], ["--nodes=1", "--ntasks=2"]]
    assert [c["continued"] for c in calls] == ["1", "2"]
    assert [e["lost"] for e in read_events(fake_slurm / "run")] == [["n3"], ["n2"]]


def test_sbatch_script_of_an_elastic_job(fake_slurm: Path) -> None:
    def script(*overrides: str) -> str:
        cfg = compose_config("train", ["launcher=slurm", "data.path=unused", f"run.dir={fake_slurm}/r", *overrides])
        return make_executor(cfg)._make_submission_file_text("srun python -m submitit.core._submit x", "uid")

    text = script("launcher.nodes=4", "launcher.min_nodes=2", "launcher.gpus_per_node=8")
    assert "#SBATCH --nodes=4" in text and "#SBATCH --no-kill" in text
    teardown = text.split("# teardown")[1]
    assert "-m launch.elastic --status $? --tasks-per-node 8 --min-nodes 2" in teardown
    assert "--open-mode=append" in teardown and "-m submitit.core._submit" in teardown
    # Without min_nodes (or with it equal to nodes) a lost node ends the job as SLURM decides.
    for plain in (script("launcher.nodes=4"), script("launcher.nodes=4", "launcher.min_nodes=4")):
        assert "--no-kill" not in plain and "launch.elastic" not in plain
    with pytest.raises(UserError, match=r"launcher\.min_nodes.*launcher\.nodes=2"):
        script("launcher.nodes=2", "launcher.min_nodes=3")
