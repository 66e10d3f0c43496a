"""Jobs on a real one-node SLURM cluster (tests/slurm/cluster.sh): a 2-task gloo job, a job
preempted and requeued through submitit's protocol, and a 3-point sweep.

All jobs are submitted by one module fixture so they run side by side; a watcher thread sends
the preemption warning (SIGUSR2, what ``--signal`` delivers before the time limit) to the requeue
job as soon as its first checkpoint is complete.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from launch.records import read_events, read_submissions
from sslframe.distributed import checkpoint as ckpt
from tests.faults.common import losses
from tests.helpers import make_image_folder
from tests.launch.common import call_tool, tiny_job
from tests.slurm.cluster import cluster_skip_reason, wait_for_job

SKIP = cluster_skip_reason()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

# 2 tasks x 4 images = 4 steps per epoch; 4 epochs.
STEPS = 16
TWO_TASKS = [
    "launcher=slurm",
    "launcher.gpus_per_node=0",
    "launcher.cpus_per_task=1",
    "launcher.time=10",
    "launcher.job_name=sslframe-test",
]
SWEEP_LRS = ("0.1", "0.2", "0.3")


@dataclass
class Submitted:
    reference: Path
    requeued: Path
    sweep: Path
    job_ids: dict[str, str]
    sweep_output: str
    preempt_errors: list[str] = field(default_factory=list)


def submit(argv: list[str]) -> str:
    code, out, err = call_tool("train", argv)
    assert code == 0, out + err
    return out


def job_id(out: str) -> str:
    match = re.search(r"submitted job (\d+)", out)
    assert match, out
    return match.group(1)


def preempt_after_first_checkpoint(run_dir: Path, job: str, errors: list[str]) -> None:
    first = run_dir / "checkpoints" / ckpt.checkpoint_name(3)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if ckpt.is_complete(first, verify=False):
            sent = subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, text=True, check=False)
            if sent.returncode != 0:
                errors.append(f"scancel --signal=USR2 {job} failed: {sent.stderr}")
            return
        time.sleep(0.05)
    errors.append(f"no checkpoint at step 3 in {run_dir}")


@pytest.fixture(scope="module")
def submitted(tmp_path_factory: pytest.TempPathFactory) -> Submitted:
    root = tmp_path_factory.mktemp("slurm")
    data = make_image_folder(root / "images")
    runs = {"reference": root / "reference", "requeued": root / "requeued", "sweep": root / "sweep"}
    with pytest.MonkeyPatch.context() as env:
        # Jobs inherit the submitting environment: one thread per task on the shared cores.
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("PYTHONUNBUFFERED", "1")
        job = [*TWO_TASKS, "launcher.tasks_per_node=2", f"trainer.max_epochs={STEPS // 4}"]
        ids = {name: job_id(submit([*tiny_job(data, runs[name]), *job])) for name in ("reference", "requeued")}
        sweep = [*TWO_TASKS, "launcher.tasks_per_node=1", "trainer.max_steps=2", f"optim.lr={','.join(SWEEP_LRS)}"]
        sweep_output = submit(["-m", *tiny_job(data, runs["sweep"]), *sweep])
    result = Submitted(runs["reference"], runs["requeued"], runs["sweep"], ids, sweep_output)
    watcher = threading.Thread(
        target=preempt_after_first_checkpoint, args=(runs["requeued"], ids["requeued"], result.preempt_errors)
    )
    watcher.start()
    for point_id in re.findall(r"submitted job (\d+)", sweep_output):
        wait_for_job(point_id)
    watcher.join()
    return result


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    state, meta = ckpt.load_checkpoint(run_dir / "checkpoints" / ckpt.checkpoint_name(STEPS))
    assert meta["step"] == STEPS
    return state["model"]


def test_two_task_job_trains_and_writes_its_run_dir(submitted: Submitted) -> None:
    run, job = submitted.reference, submitted.job_ids["reference"]
    assert wait_for_job(job) == "COMPLETED", (run / "slurm" / job / f"{job}_0_log.err").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # Two processes joined one group: 4 images each, 8 per step.
    assert records[0]["batch_size"] == 4 and records[0]["global_batch_size"] == 8
    final = run / "checkpoints" / ckpt.checkpoint_name(STEPS)
    assert ckpt.read_meta(final)["world_size"] == 2
    [entry] = read_submissions(run)
    assert entry["job_id"] == job and entry["tasks"] == 2
    for rank in (0, 1):
        assert (run / "slurm" / job / f"{job}_{rank}_log.out").is_file()
    assert [e["event"] for e in read_events(run)] == ["start", "end"]
    assert read_events(run)[-1]["status"] == "completed"


def test_preempted_job_requeues_and_matches_an_uninterrupted_run(submitted: Submitted) -> None:
    run, job = submitted.requeued, submitted.job_ids["requeued"]
    assert not submitted.preempt_errors, submitted.preempt_errors
    state = wait_for_job(job)
    log = (run / "slurm" / job / f"{job}_0_log.err").read_text()
    assert state == "COMPLETED", log[-3000:]
    events = read_events(run)
    assert [e["event"] for e in events] == ["start", "end", "start", "end"], events
    stopped, resumed = events[1], events[2]
    # Stopped after its step-3 checkpoint but before the end; came back as the same job.
    assert stopped["status"] == "requeue" and 3 <= stopped["step"] < STEPS
    assert resumed["job_id"] == job and resumed["restarts"] == 1 and resumed["requeues"] == 1
    assert events[3]["status"] == "completed" and events[3]["step"] == STEPS
    assert f"resumed from {run.resolve() / 'checkpoints' / ckpt.checkpoint_name(stopped['step'])}" in log
    wait_for_job(submitted.job_ids["reference"])
    assert losses(run) == losses(submitted.reference)
    reference, requeued = final_model(submitted.reference), final_model(run)
    assert reference.keys() == requeued.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, requeued[name]), name


def test_sweep_submits_one_job_per_point_with_its_own_run_dir(submitted: Submitted) -> None:
    sweep = submitted.sweep
    point_dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in point_dirs] == [f"{i}_optim.lr-{lr}" for i, lr in enumerate(SWEEP_LRS)]
    job_ids = re.findall(r"submitted job (\d+)", submitted.sweep_output)
    assert len(set(job_ids)) == 3
    for point, lr, job in zip(point_dirs, SWEEP_LRS, job_ids, strict=True):
        assert read_submissions(point)[-1]["job_id"] == job
        config = (point / "config.yaml").read_text()
        assert re.search(rf"^  lr: {lr}$", config, flags=re.M), config
        assert [json.loads(line)["step"] for line in (point / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    code, out, err = call_tool("sweep_status", [str(sweep)])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["point", "job", "state", "step", "loss", "requeues"]
    for line, point, job in zip(lines[1:], point_dirs, job_ids, strict=True):
        name, shown_job, state, step, *_ = line.split()
        assert (name, shown_job, state, step) == (point.name, job, "COMPLETED", "2")
