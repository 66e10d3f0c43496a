"""The ``launcher`` group: where a job runs (this machine or SLURM)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LauncherConfig:
    """Where a job runs. ``local``: this machine (one process, or torchrun around tools/train.py).
    ``nodes`` and ``gpus_per_node`` size the job; tools/plan.py plans for them."""

    name: str = "local"
    nodes: int = 1
    gpus_per_node: int = 1
    # Processes on this machine; above 1, torchrun-style processes joined on 127.0.0.1.
    # 0: one per visible GPU up to gpus_per_node, or a single process without GPUs.
    procs: int = 0
    # With several processes: when one fails or is killed, torchrun stops the others and starts
    # all of them again, up to this many times; they resume from the newest checkpoint.
    max_restarts: int = 0


@dataclass
class SlurmLauncherConfig:
    """A SLURM job through submitit (SEER-style): ``nodes`` x ``tasks_per_node`` processes, each
    running the same trainer; preempted or timed-out jobs checkpoint, requeue and resume."""

    name: str = "slurm"
    nodes: int = 1
    # Fewest nodes the job may start (or come back after a requeue) on; 0: exactly ``nodes``.
    # Below ``nodes``, SLURM gives the job between min_nodes and nodes (sbatch --nodes=MIN-MAX),
    # so a job that lost a node resumes on the rest; trainer.on_world_size_change says how the
    # batch follows.
    min_nodes: int = 0
    gpus_per_node: int = 8
    # Processes per node; 0: one per GPU (one per node when gpus_per_node is 0, a CPU job).
    tasks_per_node: int = 0
    cpus_per_task: int = 10
    # Memory per node in GB (0: the partition's default).
    mem_gb: int = 0
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    # Time limit in minutes.
    time: int = 4320
    job_name: str = "sslframe"
    # Further sbatch options: launcher.sbatch=[--exclusive,'--mail-type=END'] (quote those with =).
    sbatch: list[str] = field(default_factory=list)
    # Requeues after preemption or the time limit before the job gives up.
    max_requeues: int = 20
    # SLURM sends SIGUSR2 this many seconds before the time limit: time to checkpoint.
    signal_delay_s: int = 120
