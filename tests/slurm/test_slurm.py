"""Jobs on a real one-node SLURM cluster (tests/slurm/cluster.sh): a 2-task gloo job, a job
interrupted twice that requeues and resumes each time, and a 3-point sweep.

All jobs are submitted by one module fixture so they run side by side. A watcher thread
interrupts the requeue job twice: after its first checkpoint with the time-limit warning (SIGUSR2,
what ``--signal`` delivers; the job requeues itself through submitit's protocol), and after the
resumed run's first checkpoint with ``scontrol requeue`` (SIGTERM; SLURM requeues it).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
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


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def complete(run_dir: Path, step: int) -> Callable[[], bool]:
    return lambda: ckpt.is_complete(run_dir / "checkpoints" / ckpt.checkpoint_name(step), verify=False)


def interrupt_twice(run_dir: Path, job: str, errors: list[str]) -> None:
    """SIGUSR2 after the step-3 checkpoint; ``scontrol requeue`` after the resumed run's next one."""
    try:
        wait_until(complete(run_dir, 3), "the step-3 checkpoint")
        subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, text=True, check=True)
        wait_until(lambda: [e["event"] for e in read_events(run_dir)][:3] == ["start", "end", "start"], "a restart")
        stopped = read_events(run_dir)[1]["step"]
        following = (stopped // 3 + 1) * 3
        if following >= STEPS:
            raise AssertionError(f"the first interruption came too late (step {stopped})")
        wait_until(complete(run_dir, following), f"the step-{following} checkpoint")
        subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=True)
    except (AssertionError, subprocess.CalledProcessError) as exc:
        errors.append(f"{exc} {getattr(exc, 'stderr', '')}")


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
        # Watching from now: submitting the sweep can take longer than the job needs to finish.
        errors: list[str] = []
        watcher = threading.Thread(target=interrupt_twice, args=(runs["requeued"], ids["requeued"], errors))
        watcher.start()
        sweep = [*TWO_TASKS, "launcher.tasks_per_node=1", "trainer.max_steps=2", f"optim.lr={','.join(SWEEP_LRS)}"]
        sweep_output = submit(["-m", *tiny_job(data, runs["sweep"]), *sweep])
    result = Submitted(runs["reference"], runs["requeued"], runs["sweep"], ids, sweep_output, errors)
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


def test_interrupted_job_requeues_and_matches_an_uninterrupted_run(submitted: Submitted) -> None:
    run, job = submitted.requeued, submitted.job_ids["requeued"]
    assert not submitted.preempt_errors, submitted.preempt_errors
    state = wait_for_job(job)
    log = (run / "slurm" / job / f"{job}_0_log.err").read_text()
    assert state == "COMPLETED", log[-3000:]
    events = read_events(run)
    assert [e["event"] for e in events] == ["start", "end"] * 3, events
    starts, ends = events[0::2], events[1::2]
    # The same job three times: requeued by itself (submitit counts it), then by SLURM.
    assert [(e["job_id"], e["restarts"], e["requeues"]) for e in starts] == [(job, 0, 0), (job, 1, 1), (job, 2, 1)]
    assert [e["status"] for e in ends] == ["requeue", "stopped", "completed"]
    first, second = ends[0]["step"], ends[1]["step"]
    assert 3 <= first < second < STEPS and ends[2]["step"] == STEPS
    for step in (first, second):
        assert f"resumed from {run.resolve() / 'checkpoints' / ckpt.checkpoint_name(step)}" in log
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
