"""Rank and world size from torchrun or SLURM variables; a lone process needs none."""

from __future__ import annotations

import pytest

from sslframe.distributed.env import detect_env, first_slurm_host

DIST_VARS = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "GROUP_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_ID",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in DIST_VARS:
        # Set first so that teardown restores the original state even for variables that
        # detect_env itself writes (MASTER_ADDR/MASTER_PORT under SLURM).
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node7", "node7"),
        ("gpu[003-005,007]", "gpu003"),
        ("a[1,4],b2", "a1"),
        ("learnfair[0100-0163]", "learnfair0100"),
    ],
)
def test_first_host_of_a_slurm_nodelist(nodelist: str, first: str) -> None:
    assert first_slurm_host(nodelist) == first


def test_single_process_without_variables(clean_env: pytest.MonkeyPatch) -> None:
    env = detect_env()
    assert (env.rank, env.world_size, env.launcher, env.group) == (0, 1, "none", None)


def test_torchrun_variables(clean_env: pytest.MonkeyPatch) -> None:
    for k, v in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "GROUP_RANK": "2"}.items():
        clean_env.setenv(k, v)
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.launcher) == (5, 8, 1, 2, "torchrun")


def test_slurm_variables_set_the_master_address(clean_env: pytest.MonkeyPatch) -> None:
    for k, v in {
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[010-011]",
        "SLURM_JOB_ID": "12345",
    }.items():
        clean_env.setenv(k, v)
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.launcher) == (9, 16, 1, 1, "slurm")
    import os

    assert os.environ["MASTER_ADDR"] == "gpu010" and 20000 <= int(os.environ["MASTER_PORT"]) < 40000
