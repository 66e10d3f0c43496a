"""Jobs on two SLURM nodes (tests/slurm/cluster.sh start --nodes 2): each node in its own network
namespace with its own host name and address, so the ranks rendezvous across two addresses.

- a 2-node job (one task per node) trains and logs the same losses as a 1-node 2-task job of the
  same global batch;
- a 2-point sweep of 2-node jobs, and ``sweep_status`` over it;
- a node lost mid-run (its link cut, then everything on it killed, as at a power loss): the task on
  the other node stops within ``distributed.timeout_s`` naming the silent rank, SLURM takes the
  node out of the job, and the job goes on on the node left (``launcher.min_nodes=1``) from the
  newest complete checkpoint at world size 1 with the same global batch.

The first three jobs run side by side; the node-loss job runs after them (killing a node would
kill whatever else runs there), and the node is started again afterwards.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from launch.records import read_events
from sslframe.distributed import checkpoint as ckpt
from tests.faults.common import losses
from tests.helpers import make_image_folder
from tests.launch.common import call_tool, tiny_job
from tests.slurm.cluster import cluster, two_node_skip_reason, wait_for_job
from tests.slurm.test_slurm import complete, job_id, submit, wait_until

SKIP = two_node_skip_reason()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

CPU_JOB = ["launcher=slurm", "launcher.gpus_per_node=0", "launcher.cpus_per_task=1", "launcher.time=10"]
PAIR = [*CPU_JOB, "launcher.partition=pair", "launcher.nodes=2", "launcher.job_name=sslframe-pair"]
# 2 ranks x 4 images: 4 steps per epoch.
STEPS = 8
LOST_STEPS = 60
TIMEOUT_S = 20
SWEEP_LRS = ("0.1", "0.2")


@dataclass
class Jobs:
    runs: dict[str, Path]
    ids: dict[str, str]
    sweep_output: str = ""
    killed_at: float = 0.0
    errors: list[str] = field(default_factory=list)


def rank_log(run: Path, job: str, rank: int) -> str:
    return (run / "slurm" / job / f"{job}_{rank}_log.err").read_text()


def epoch_seconds(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def kill_node_after(run: Path, step: int, jobs: Jobs) -> None:
    """Kill sslnode2 once the step-``step`` checkpoint is complete."""
    try:
        wait_until(complete(run, step), f"the step-{step} checkpoint")
        jobs.killed_at = time.time()
        cluster("kill-node", "sslnode2")
    except Exception as exc:  # reported by the test
        jobs.errors.append(repr(exc))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    root = tmp_path_factory.mktemp("two_nodes")
    data = make_image_folder(root / "images")
    runs = {name: root / name for name in ("two_nodes", "one_node", "sweep", "lost")}
    result = Jobs(runs, {})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("PYTHONUNBUFFERED", "1")
        epochs = f"trainer.max_epochs={STEPS // 4}"
        result.ids["two_nodes"] = job_id(submit([*tiny_job(data, runs["two_nodes"]), *PAIR, epochs]))
        one_node = [*CPU_JOB, "launcher.tasks_per_node=2", epochs]
        result.ids["one_node"] = job_id(submit([*tiny_job(data, runs["one_node"]), *one_node]))
        sweep = [*PAIR, "trainer.max_steps=2", f"optim.lr={','.join(SWEEP_LRS)}"]
        result.sweep_output = submit(["-m", *tiny_job(data, runs["sweep"]), *sweep])
        for job in [*result.ids.values(), *re.findall(r"submitted job (\d+)", result.sweep_output)]:
            wait_for_job(job)
        lost = [*PAIR, "launcher.min_nodes=1", f"trainer.max_epochs={LOST_STEPS // 4}"]
        lost.append(f"distributed.timeout_s={TIMEOUT_S}")
        # Watching before the job exists: on a loaded machine submitting can take as long as the
        # job needs to pass its step-6 checkpoint.
        killer = threading.Thread(target=kill_node_after, args=(runs["lost"], 6, result))
        killer.start()
        result.ids["lost"] = job_id(submit([*tiny_job(data, runs["lost"]), *lost]))
    try:
        wait_for_job(result.ids["lost"], timeout=400)
    finally:
        killer.join()
        cluster("start-node", "sslnode2")
    return result


def test_two_node_job_equals_a_one_node_two_task_job(jobs: Jobs) -> None:
    two, one = jobs.runs["two_nodes"], jobs.runs["one_node"]
    job = jobs.ids["two_nodes"]
    assert wait_for_job(job) == "COMPLETED", rank_log(two, job, 0)[-3000:]
    assert wait_for_job(jobs.ids["one_node"]) == "COMPLETED"
    # One task on each node, each with the node's own host name (and address).
    assert "task 0 of 2 on sslnode1" in rank_log(two, job, 0)
    assert "task 1 of 2 on sslnode2" in rank_log(two, job, 1)
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2 and records[0]["global_batch_size"] == 8
    assert sorted(losses(two)) == list(range(1, STEPS + 1))
    assert losses(two) == losses(one)


def test_two_node_sweep_and_its_status(jobs: Jobs) -> None:
    sweep = jobs.runs["sweep"]
    point_dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    job_ids = re.findall(r"submitted job (\d+)", jobs.sweep_output)
    assert [p.name for p in point_dirs] == [f"{i}_optim.lr-{lr}" for i, lr in enumerate(SWEEP_LRS)]
    assert len(set(job_ids)) == 2
    for point, job in zip(point_dirs, job_ids, strict=True):
        assert "on sslnode2" in rank_log(point, job, 1)
    code, out, err = call_tool("sweep_status", [str(sweep)])
    assert code == 0, err
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    expected = [(p.name, j, "COMPLETED", "2") for p, j in zip(point_dirs, job_ids, strict=True)]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == expected


def test_a_lost_node_ends_the_step_and_the_job_goes_on_with_the_node_left(jobs: Jobs) -> None:
    run, job = jobs.runs["lost"], jobs.ids["lost"]
    assert not jobs.errors, jobs.errors
    log = rank_log(run, job, 0)
    assert wait_for_job(job) == "COMPLETED", log[-3000:]
    events = read_events(run)
    assert [e["event"] for e in events] == ["start", "end", "node_lost", "start", "end"], events
    first, failed, lost, second, done = events
    assert (first["tasks"], first["continued"], first["host"]) == (2, 0, "sslnode1")
    # The rank left stops on its own, naming the silent one, within the collective timeout
    # (plus a heartbeat period and a step's time).
    assert failed["status"] == "failed" and "rank 1 has not answered" in failed["error"], failed
    assert epoch_seconds(failed["time"]) - jobs.killed_at < TIMEOUT_S + 15
    # SLURM declares the node down (SlurmdTimeout=45 s in the test cluster; the controller pings
    # every third of it, so 45-60 s after the kill) and the job goes on.
    assert (lost["lost"], lost["nodes"], lost["tasks"]) == (["sslnode2"], ["sslnode1"], 1)
    assert epoch_seconds(lost["time"]) - jobs.killed_at < 120
    assert (second["tasks"], second["continued"], done["status"], done["step"]) == (1, 1, "completed", LOST_STEPS)
    # Resumed at world size 1 from the newest complete checkpoint, the global batch kept.
    [change] = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert change["event"] == "world_size_change" and change["world_size"] == [2, 1]
    assert change["global_batch"] == [8, 8] and change["per_rank_batch"] == [4, 8]
    resumed = change["step"][0]
    assert resumed >= 6 and f"resumed from {run.resolve() / 'checkpoints' / ckpt.checkpoint_name(resumed)}" in log
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    worlds = {r["step"]: r["world_size"] for r in records}  # the last record of a step logged twice
    assert {worlds[s] for s in range(1, resumed + 1)} == {2}
    assert {worlds[s] for s in range(resumed + 1, LOST_STEPS + 1)} == {1}
    assert {r["global_batch_size"] for r in records} == {8}
    assert ckpt.read_meta(run / "checkpoints" / ckpt.checkpoint_name(LOST_STEPS))["world_size"] == 1
