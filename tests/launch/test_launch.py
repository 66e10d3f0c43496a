"""Launcher pieces that need no cluster: sbatch options from the config, the requeue protocol of
TrainJob, sweep expansion, status reports and config errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import _make_sbatch_string

from launch import job as job_module
from launch.job import RequeueRequest, TrainJob
from launch.records import append_event, read_events, record_submission
from launch.slurm import make_executor, sbatch_parameters
from launch.status import collect, format_table
from launch.sweep import SWEEP_FILE, expand, point_dir, run_sweep
from sslframe.config import compose_config
from sslframe.errors import UserError
from tests.launch.common import call_tool


def sbatch_lines(*overrides: str) -> list[str]:
    """The ``#SBATCH`` lines submitit writes for a composed launcher config."""
    cfg = compose_config("train", ["launcher=slurm", "data.path=unused", *overrides])
    params = sbatch_parameters(cfg.launcher)
    text = _make_sbatch_string(command="python -m submitit.core._submit x", folder="/x/%j", **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_gpu_job_gets_one_task_per_gpu_and_the_cluster_options() -> None:
    lines = sbatch_lines(
        "config=swav_regnet",
        "launcher.nodes=8",
        "launcher.gpus_per_node=8",
        "launcher.partition=learn",
        "launcher.account=ssl",
        "launcher.qos=high",
        "launcher.constraint=volta32gb",
        "launcher.mem_gb=480",
        "launcher.time=60",
        "launcher.job_name=seer",
        "launcher.sbatch=[--exclusive,'--mail-type=END']",
    )
    for expected in (
        "--nodes=8",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--cpus-per-task=10",
        "--partition=learn",
        "--account=ssl",
        "--qos=high",
        "--constraint=volta32gb",
        "--mem=480GB",
        "--time=60",
        "--job-name=seer",
        "--requeue",
        "--exclusive",
        "--mail-type=END",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {expected}" in lines, (expected, lines)


def test_cpu_job_asks_for_no_gpus_and_no_unset_options() -> None:
    lines = sbatch_lines("launcher.gpus_per_node=0", "launcher.tasks_per_node=2")
    assert "#SBATCH --ntasks-per-node=2" in lines
    for absent in ("--gpus", "--partition", "--account", "--qos", "--constraint", "--mem="):
        assert not any(absent in line for line in lines), (absent, lines)


def test_bad_launcher_values_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"launcher\.nodes"):
        sbatch_lines("launcher.nodes=0")
    with pytest.raises(UserError, match=r"launcher\.sbatch.*'exclusive'"):
        sbatch_lines("launcher.sbatch=[exclusive]")
    with pytest.raises(UserError, match=r"unknown key 'launcher.partitions'.*partition"):
        compose_config("train", ["launcher=slurm", "launcher.partitions=learn"])
    with pytest.raises(UserError, match=r"unknown option 'slurmm'.*local, slurm"):
        compose_config("train", ["launcher=slurmm"])
    monkeypatch.setenv("PATH", "")
    cfg = compose_config("train", ["launcher=slurm", "data.path=unused"])
    with pytest.raises(UserError, match="sbatch"):
        make_executor(cfg)


def job_config(run_dir: Path) -> dict:
    return {"run": {"dir": str(run_dir)}, "trainer": {"resume": "never"}}


def test_checkpoint_requeues_with_resume_until_max_requeues(tmp_path: Path) -> None:
    job = TrainJob(job_config(tmp_path), max_requeues=2)
    for expected in (1, 2):
        delayed = job.checkpoint()
        assert isinstance(delayed, submitit.helpers.DelayedSubmission)
        job = delayed.function
        assert isinstance(job, TrainJob) and job.requeues == expected
        assert job.config["trainer"]["resume"] == "auto"
    assert job.checkpoint() is None
    events = [(e["event"], e["status"], e["requeues"]) for e in read_events(tmp_path)]
    assert events == [("end", "requeue", 1), ("end", "requeue", 2), ("end", "gave_up", 2)]


def test_preemption_warning_reaches_the_trainers_stop_request() -> None:
    """The job's handler asks the training loop to stop through the explicit API
    (``sslframe.engine.stop``), not through whatever handler is installed for another signal."""
    from sslframe.engine import stop

    with stop.listening() as training:
        request = RequeueRequest()
        request(signal.SIGUSR2, None)
        assert request.asked and training.received == signal.SIGUSR2
    # Outside training the request is remembered but reaches no loop (and kills nothing).
    outside = RequeueRequest()
    outside(signal.SIGUSR2, None)
    assert outside.asked and stop.request_stop(signal.SIGUSR2) is False
    assert job_module.preempt_signal() == signal.SIGUSR2


def test_sweep_expands_to_the_cartesian_product() -> None:
    fixed, points = expand(["config=quickstart", "optim.lr=0.6,1.2,2.4", "trainer.max_steps=range(1,3)"])
    assert fixed == ["config=quickstart"]
    assert len(points) == 6
    assert points[0] == ["optim.lr=0.6", "trainer.max_steps=1"]
    assert points[-1] == ["optim.lr=2.4", "trainer.max_steps=2"]
    assert point_dir(Path("/s"), 4, ["data.path=/a b", "x=1"]) == Path("/s/4_data.path-a-b,x-1")
    with pytest.raises(UserError, match=r"run\.dir cannot be swept"):
        expand(["run.dir=a,b"])


def test_sweep_composes_every_point_with_its_own_run_dir(tmp_path: Path) -> None:
    launched: list[tuple[str, float, str]] = []

    def launcher(name: str):
        def run(cfg, overrides):
            launched.append((name, cfg.optim.lr, cfg.run.dir))
            return 0

        return run

    code = run_sweep(
        [f"run.dir={tmp_path}", "data.path=unused", "optim.lr=0.6,1.2"],
        lambda point: compose_config("train", point),
        launcher,
    )
    assert code == 0
    assert launched == [
        ("local", 0.6, str(tmp_path / "0_optim.lr-0.6")),
        ("local", 1.2, str(tmp_path / "1_optim.lr-1.2")),
    ]
    record = json.loads((tmp_path / SWEEP_FILE).read_text())
    assert [p["dir"] for p in record["points"]] == ["0_optim.lr-0.6", "1_optim.lr-1.2"]


def test_sweep_checks_every_point_before_launching_any(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"trunk\.arch"):
        run_sweep(
            [f"run.dir={tmp_path}", "data.path=unused", "trunk.arch=resnet18,resnet_nope"],
            lambda point: compose_config("train", point),
            lambda name: pytest.fail("launched"),
        )
    assert not (tmp_path / SWEEP_FILE).exists()


def test_status_falls_back_to_the_run_dirs_events(tmp_path: Path) -> None:
    states = {"0_a": ["start", "end:completed"], "1_b": ["start", "end:requeue", "start"], "2_c": [], "3_d": None}
    for name, events in states.items():
        run = tmp_path / name
        run.mkdir()
        if events is None:
            continue  # run by launcher=local: no job
        record_submission(run, {"launcher": "slurm", "job_id": "999999999"})
        for event in events:
            kind, _, status = event.partition(":")
            append_event(run, kind, **({"status": status} if status else {}))
    (tmp_path / "0_a" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.25}\n')
    # Without sweep.json the sub-folders of submitted jobs are found.
    assert [r.name for r in collect(tmp_path)] == ["0_a", "1_b", "2_c"]
    (tmp_path / SWEEP_FILE).write_text(json.dumps({"points": [{"dir": name} for name in states]}))
    rows = collect(tmp_path)
    assert [(r.name, r.state, r.step, r.loss, r.requeues) for r in rows] == [
        ("0_a", "COMPLETED", 2, 2.25, 0),
        ("1_b", "STARTED", None, None, 1),
        ("2_c", "SUBMITTED", None, None, 0),
        ("3_d", "LOCAL", None, None, 0),
    ]
    table = format_table(rows).splitlines()
    assert table[1].split() == ["0_a", "999999999", "COMPLETED", "2", "2.2500", "0"]
    code, _, err = call_tool("sweep_status", [str(tmp_path / "missing")])
    assert code == 2 and err.startswith("error: no such sweep dir")
