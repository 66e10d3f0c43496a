"""The primary configs (training, planning, evaluation) and their fixed sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from sslframe.config.schema.data import DataConfig
from sslframe.config.schema.optim import OptimConfig, ScheduleConfig
from sslframe.config.schema.trainer import DistributedConfig, ModelConfig, MonitorConfig, TrainerConfig
from sslframe.config.schema.transform import MultiCropConfig
from sslframe.registry import Choices


@dataclass
class RunConfig:
    dir: str = "runs/default"


@dataclass
class PlanConfig:
    """Inputs of tools/plan.py that the training config does not hold."""

    # GPU memory; the default is an A100-40GB.
    gpu_memory_gb: float = 40.0
    # Dense peak of one GPU in the training precision; 312 is the A100's bf16/fp16 tensor-core
    # peak (NVIDIA A100 datasheet). Use 989 for H100 SXM bf16, 125 for V100 fp16.
    peak_tflops: float = 312.0
    # Model FLOPs utilisation assumed for the time estimate.
    mfu: float = 0.3
    # Fraction of GPU memory kept free (fragmentation, spikes).
    headroom: float = 0.1
    # CUDA context, communication buffers and allocator slack per GPU.
    overhead_gb: float = 1.5
    # Images to train on, for the wall-time estimate (0: no estimate).
    images: int = 0
    # Where the JSON report goes ("": <run.dir>/plan.json).
    out: str = ""


@dataclass
class TrackingConfig:
    """Where experiment trackers write (``logger=[...,mlflow,wandb]``)."""

    # MLflow tracking URI ("": a local file store in run.dir/mlruns, no server needed).
    mlflow_uri: str = ""
    # MLflow experiment name.
    experiment: str = "sslframe"
    wandb_project: str = "sslframe"
    # online | offline | disabled ("": offline unless WANDB_MODE or a W&B API key is configured).
    wandb_mode: str = ""
    choices: ClassVar[Choices] = {"wandb_mode": ("", "online", "offline", "disabled")}


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    # Groups with several schemas (a trunk family, a method, a launcher; heads are the components'
    # own) are checked against the option's schema by ``validate``; the others are typed here.
    trunk: Any = MISSING
    head: Any = MISSING
    method: Any = MISSING
    data: DataConfig = MISSING
    transform: MultiCropConfig = MISSING
    optim: OptimConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = MISSING
    distributed: DistributedConfig = MISSING
    launcher: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # Where metrics go besides metrics.jsonl: any of tensorboard, mlflow, wandb.
    logger: list[str] = field(default_factory=lambda: ["tensorboard"])
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class PlanRootConfig(TrainConfig):
    """tools/plan.py: a training config plus the planner's own inputs."""

    plan: PlanConfig = field(default_factory=PlanConfig)


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    out: str = ""
    data: DataConfig = MISSING
    eval: Any = MISSING
