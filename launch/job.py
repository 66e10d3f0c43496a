"""What runs inside each SLURM task: the trainer, plus submitit's checkpoint-and-requeue protocol.

Submitit asks SLURM to send SIGUSR2 shortly before the time limit (``--signal``); on a
preempting cluster the warning comes the same way. Submitit's own handler would requeue at once,
mid-step, so while training we take the signal ourselves and hand it to the trainer as its stop
signal: every rank finishes the step, writes one complete checkpoint and stops. Rank 0 then calls
submitit's handler, which asks ``checkpoint()`` for the job to requeue (the same config with
``trainer.resume=auto``), requeues it with ``scontrol requeue`` and exits; the new run resumes
from the newest complete checkpoint. SIGTERM (``scancel``, ``scontrol requeue``, preemption in
REQUEUE mode) also checkpoints through the trainer; there SLURM decides whether the job returns.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import submitit
from omegaconf import OmegaConf

from launch.elastic import CONTINUED_ENV
from launch.records import append_event
from sslframe.engine.stop import request_stop

log = logging.getLogger(__name__)


def preempt_signal() -> signal.Signals:
    """The signal submitit has SLURM send before the time limit (SIGUSR2 unless overridden)."""
    return signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG]


class RequeueRequest:
    """Signal handler for the preemption warning: remembers it and asks the trainer to stop
    (``sslframe.engine.stop.request_stop``), so it checkpoints at the step's end."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True
        request_stop(signum)


class TrainJob(submitit.helpers.Checkpointable):
    """A picklable training job: the resolved config, and how often it has been requeued."""

    def __init__(self, config: dict[str, Any], max_requeues: int, requeues: int = 0) -> None:
        self.config = config
        self.max_requeues = max_requeues
        self.requeues = requeues
        # The step the trainer stopped at, once it has checkpointed for a requeue.
        self.stopped_at: int | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run"]["dir"])

    def __call__(self) -> dict[str, Any]:
        from sslframe.cli import setup_logging
        from sslframe.engine.trainer import train

        setup_logging()
        env = submitit.JobEnvironment()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        continued = int(os.environ.get(CONTINUED_ENV, "0"))
        main = env.global_rank == 0
        # On every rank, whatever its log level: each task's log names the node it ran on.
        print(f"task {env.global_rank} of {env.num_tasks} on {socket.gethostname()}", file=sys.stderr, flush=True)
        if main:
            append_event(
                self.run_dir, "start", job_id=env.job_id, restarts=restarts, requeues=self.requeues,
                continued=continued, tasks=env.num_tasks, host=socket.gethostname(),
            )  # fmt: skip
        cfg = OmegaConf.create(self.config)
        if restarts or self.requeues or continued:
            # A requeued job, or one going on after a lost node (launch/elastic.py), continues
            # where the last complete checkpoint left it.
            cfg.trainer.resume = "auto"
        request = RequeueRequest()
        sig = preempt_signal()
        submitit_handler = signal.signal(sig, request)
        try:
            result = train(cfg)
        except BaseException as exc:
            if main:
                append_event(self.run_dir, "end", status="failed", error=str(exc).splitlines()[0] if str(exc) else "")
            raise
        finally:
            signal.signal(sig, submitit_handler)
        summary = {"step": result.final_step, "loss": result.final_loss, "preempted": result.preempted}
        if not main:
            return summary
        if result.preempted and request.asked and callable(submitit_handler):
            self.stopped_at = result.final_step
            # Submitit's protocol: checkpoint() gives the job to requeue; it requeues and exits.
            submitit_handler(sig, None)
        append_event(self.run_dir, "end", status="stopped" if result.preempted else "completed", step=result.final_step)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """The job to requeue after preemption or the time limit, or None past ``max_requeues``.
        The trainer has already written its checkpoint; the requeued job resumes from it."""
        if self.requeues >= self.max_requeues:
            log.warning("not requeued: %d requeues already (launcher.max_requeues)", self.requeues)
            append_event(self.run_dir, "end", status="gave_up", step=self.stopped_at, requeues=self.requeues)
            return None
        config = OmegaConf.to_container(OmegaConf.create(self.config))
        config["trainer"]["resume"] = "auto"
        append_event(self.run_dir, "end", status="requeue", step=self.stopped_at, requeues=self.requeues + 1)
        return submitit.helpers.DelayedSubmission(TrainJob(config, self.max_requeues, self.requeues + 1))
