"""A SLURM request that no node of the partition can hold is refused before submitting, and a
pending job's reason shows in sweep_status. ``sinfo`` and ``squeue`` are stand-in scripts on PATH
that print what the real commands print for the given format options (the real SLURM runs in
tests/slurm/ where its test cluster is up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launch.partition import check_request_fits, parse_gpus, partition_nodes
from launch.status import slurm_states
from sslframe.config import compose_config
from sslframe.errors import UserError

# sinfo -h -N -o "%N|%c|%m|%G|%P": a CPU partition (default) of 4-CPU nodes, a GPU partition.
SINFO = """node1|4|7900|(null)|debug*
node2|4|7900|(null)|debug*
gpu1|64|515000|gpu:a100:8(S:0-1)|gpu
gpu2|64|515000|gpu:a100:8(S:0-1)|gpu
"""


def fake_command(bin_dir: Path, name: str, output: str) -> None:
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {bin_dir / (name + '.args')}\ncat <<'EOF'\n{output}EOF\n")
    script.chmod(0o755)


@pytest.fixture
def slurm_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "sinfo", SINFO)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def launcher(*overrides: str):
    return compose_config("train", ["config=quickstart", "launcher=slurm", *overrides]).launcher


def test_gres_fields_count_gpus() -> None:
    assert parse_gpus("gpu:8") == 8
    assert parse_gpus("gpu:a100:4(S:0-1)") == 4
    assert parse_gpus("gpu:2,shard:8") == 2
    assert parse_gpus("(null)") == 0


def test_the_default_partition_is_the_starred_one(slurm_bin: Path) -> None:
    found = partition_nodes("")
    assert found is not None
    name, nodes = found
    assert name == "debug" and [n.name for n in nodes] == ["node1", "node2"]


def test_default_cpus_per_task_on_small_nodes_is_refused_with_the_largest_node(slurm_bin: Path) -> None:
    # The new user's first try: a CPU job with the default 10 CPUs per task on 4-CPU nodes.
    cfg = launcher("launcher.gpus_per_node=0")
    with pytest.raises(UserError) as err:
        check_request_fits(cfg, tasks_per_node=1)
    message = str(err.value)
    assert "could never start" in message
    assert "10 CPUs (1 tasks x launcher.cpus_per_task=10)" in message
    assert "the default partition" not in message and "partition 'debug'" in message
    assert "node1, has 4 CPUs" in message


def test_requests_that_fit_pass(slurm_bin: Path) -> None:
    check_request_fits(launcher("launcher.gpus_per_node=0", "launcher.cpus_per_task=4"), tasks_per_node=1)
    check_request_fits(
        launcher("launcher.partition=gpu", "launcher.nodes=2", "launcher.cpus_per_task=8", "launcher.mem_gb=400"),
        tasks_per_node=8,
    )


def test_too_many_gpus_or_nodes_is_refused(slurm_bin: Path) -> None:
    with pytest.raises(UserError, match=r"16 GPUs each.*0 node\(s\) that large.*8 GPUs"):
        check_request_fits(
            launcher("launcher.partition=gpu", "launcher.gpus_per_node=16", "launcher.cpus_per_task=1"), 16
        )
    with pytest.raises(UserError, match=r"asks for 3 node\(s\).*has 2 node\(s\) that large"):
        check_request_fits(launcher("launcher.partition=gpu", "launcher.nodes=3", "launcher.cpus_per_task=1"), 8)
    with pytest.raises(UserError, match="has no nodes"):
        check_request_fits(launcher("launcher.partition=nosuch"), 8)


def test_no_sinfo_or_a_constraint_skips_the_check(monkeypatch: pytest.MonkeyPatch, slurm_bin: Path) -> None:
    big = ("launcher.gpus_per_node=0", "launcher.cpus_per_task=100")
    check_request_fits(launcher(*big, "launcher.constraint=bigmem"), 1)
    monkeypatch.setenv("PATH", "")
    check_request_fits(launcher(*big), 1)


def test_a_pending_jobs_reason_is_part_of_its_state(slurm_bin: Path) -> None:
    fake_command(slurm_bin, "squeue", "41|PENDING|PartitionConfig\n42|RUNNING|None\n")
    fake_command(slurm_bin, "sacct", "")
    states = slurm_states(["41", "42"])
    assert states == {"41": "PENDING (PartitionConfig)", "42": "RUNNING"}
    assert "%i|%T|%r" in (slurm_bin / "squeue.args").read_text()
