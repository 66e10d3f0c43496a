"""``launcher=slurm``: submit the training run as a SLURM job through submitit.

The job has ``launcher.nodes`` nodes with ``tasks_per_node`` tasks each (one per GPU); every task
initialises the process group from SLURM's variables (sslframe/distributed/env.py) and runs the
same trainer. Logs go to ``<run.dir>/slurm/<job id>/``; ``<run.dir>/launcher.json`` records them.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig, OmegaConf

from launch.job import TrainJob
from launch.partition import check_request_fits
from launch.records import now_iso, record_submission
from sslframe.errors import UserError

# Put this checkout first on the job's import path, so `launch` and `sslframe` are the ones
# that submitted it (the job runs `python -m submitit.core._submit` with the same interpreter).
ROOT = Path(__file__).resolve().parents[1]


def tasks_per_node(launcher: DictConfig) -> int:
    """One task per GPU unless set; a CPU job (``gpus_per_node=0``) runs one task per node."""
    return launcher.tasks_per_node or max(launcher.gpus_per_node, 1)


def sbatch_parameters(launcher: DictConfig) -> dict[str, Any]:
    """Submitit's SlurmExecutor parameters (named after sbatch's options) for the launcher config."""
    for key in ("nodes", "cpus_per_task", "time"):
        if launcher[key] < 1:
            raise UserError(f"bad value for 'launcher.{key}': {launcher[key]} (must be at least 1)")
    if launcher.gpus_per_node < 0 or launcher.tasks_per_node < 0 or launcher.max_requeues < 0:
        raise UserError("launcher.gpus_per_node, launcher.tasks_per_node and launcher.max_requeues cannot be negative")
    if not 0 <= launcher.min_nodes <= launcher.nodes:
        raise UserError(
            f"bad value for 'launcher.min_nodes': {launcher.min_nodes} (0, or 1 to launcher.nodes={launcher.nodes})"
        )
    params: dict[str, Any] = {
        "job_name": launcher.job_name,
        "nodes": launcher.nodes,
        "ntasks_per_node": tasks_per_node(launcher),
        "cpus_per_task": launcher.cpus_per_task,
        "time": launcher.time,
        "signal_delay_s": launcher.signal_delay_s,
        "setup": [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"],
    }
    if launcher.gpus_per_node > 0:
        params["gpus_per_node"] = launcher.gpus_per_node
    if launcher.mem_gb > 0:
        params["mem"] = f"{launcher.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if launcher[key]:
            params[key] = launcher[key]
    # Requeueable even where the cluster's default is not (JobRequeue=0).
    extra: dict[str, Any] = {"requeue": True}
    if elastic(launcher):
        # A lost node leaves the job running on the others (launch/elastic.py).
        extra["no-kill"] = True
    params["additional_parameters"] = {**extra, **extra_sbatch_options(launcher.sbatch)}
    return params


def elastic(launcher: DictConfig) -> bool:
    """Whether the job may go on with fewer nodes than it started on (``launcher.min_nodes``)."""
    return 0 < launcher.min_nodes < launcher.nodes


def node_count(launcher: DictConfig) -> str:
    """``8``, or ``8 (down to 4)`` with ``launcher.min_nodes``: the nodes the job runs on."""
    if elastic(launcher):
        return f"{launcher.nodes} (down to {launcher.min_nodes})"
    return str(launcher.nodes)


def elastic_teardown(executor: submitit.SlurmExecutor, launcher: DictConfig, run_dir: Path) -> list[str]:
    """The batch script's lines after submitit's ``srun``: when the step ended with a node lost,
    ``launch.elastic`` starts it again on the nodes left. ``$?`` is that srun's exit status."""
    stdout = str(executor.folder / "%j_%t_log.out")
    step = [
        "--unbuffered",
        "--open-mode=append",
        "--output",
        stdout,
        "--error",
        stdout.replace("_log.out", "_log.err"),
        *shlex.split(executor._submitit_command_str),
    ]
    options = [
        "--status",
        "$?",
        "--tasks-per-node",
        str(tasks_per_node(launcher)),
        "--min-nodes",
        str(launcher.min_nodes),
        "--run-dir",
        shlex.quote(str(run_dir)),
    ]
    return [" ".join([shlex.quote(executor.python), "-m", "launch.elastic", *options, "--", shlex.join(step)])]


def extra_sbatch_options(options: Sequence[str]) -> dict[str, Any]:
    """``[--exclusive, --mail-type=END]`` as submitit's ``{"exclusive": True, "mail-type": "END"}``."""
    parsed: dict[str, Any] = {}
    for option in options:
        if not option.startswith("--") or len(option) < 3:
            raise UserError(f"bad value in 'launcher.sbatch': '{option}' (options are --name or --name=value)")
        name, eq, value = option[2:].partition("=")
        parsed[name] = value if eq else True
    return parsed


def make_executor(cfg: DictConfig) -> submitit.SlurmExecutor:
    """A SlurmExecutor writing its files (sbatch script, pickles, logs) to ``<run.dir>/slurm/%j``."""
    if shutil.which("sbatch") is None:
        raise UserError("launcher=slurm needs SLURM's sbatch on PATH (run from a cluster's login node)")
    folder = Path(cfg.run.dir).resolve() / "slurm" / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.launcher.max_requeues)
    executor.update_parameters(**sbatch_parameters(cfg.launcher))
    if elastic(cfg.launcher):
        executor.update_parameters(teardown=elastic_teardown(executor, cfg.launcher, Path(cfg.run.dir).resolve()))
    return executor


def submit(cfg: DictConfig, overrides: Sequence[str]) -> int:
    """Submit the run; print and record the job id and where its logs go."""
    run_dir = Path(cfg.run.dir).resolve()
    executor = make_executor(cfg)
    check_request_fits(cfg.launcher, tasks_per_node(cfg.launcher))
    config = OmegaConf.to_container(cfg, resolve=True)
    config["run"]["dir"] = str(run_dir)
    try:
        job = executor.submit(TrainJob(config, cfg.launcher.max_requeues))
    except submitit.core.utils.FailedJobError as exc:
        raise UserError(f"sbatch refused the job: {str(exc).strip().splitlines()[-1]}") from None
    log_dir = run_dir / "slurm" / str(job.job_id)
    stdout = str(job.paths.stdout).replace("_0_log", "_<rank>_log")
    record_submission(
        run_dir,
        {
            "launcher": "slurm",
            "job_id": str(job.job_id),
            "submitted": now_iso(),
            "log_dir": str(log_dir),
            "stdout": stdout,
            "stderr": stdout.replace("_log.out", "_log.err"),
            "command": ["tools/train.py", *overrides],
            "tasks": cfg.launcher.nodes * tasks_per_node(cfg.launcher),
            "nodes": node_count(cfg.launcher),
        },
    )
    print(f"submitted job {job.job_id} ({node_count(cfg.launcher)} nodes x {tasks_per_node(cfg.launcher)} tasks)")
    print(f"logs: {stdout}")
    print(f"run dir: {run_dir}")
    return 0
