"""Typed schemas of the configuration, one module per group (docs/architecture.md, principle 4).

The groups whose options are components (``trunk``, ``head``, ``method``) have their schemas
next to the components and registered with them (``sslframe.registry``); the groups below are
the configuration's own and are registered here. Each option file under ``configs/<group>/``
extends its schema through its defaults list (``/schema/<group>/<option>@_here_``), so Hydra
type-checks values while composing, and ``sslframe.config.loader.validate`` checks the whole
composed config again (unknown keys, missing values, choices) before any work starts.
"""

from sslframe.config.schema.data import DataConfig
from sslframe.config.schema.eval import (
    EmbedEvalConfig,
    ExtractEvalConfig,
    FeatureEvalConfig,
    FinetuneEvalConfig,
    KNNEvalConfig,
    LinearEvalConfig,
    LowShotEvalConfig,
)
from sslframe.config.schema.launcher import LauncherConfig, SlurmLauncherConfig
from sslframe.config.schema.optim import OptimConfig, ScheduleConfig
from sslframe.config.schema.root import EvalConfig, PlanConfig, PlanRootConfig, RunConfig, TrackingConfig, TrainConfig
from sslframe.config.schema.trainer import DistributedConfig, ModelConfig, MonitorConfig, TrainerConfig
from sslframe.config.schema.transform import MultiCropConfig
from sslframe.registry import register_schema

for _group, _options in {
    "data": {"data": DataConfig},
    "transform": {"multicrop": MultiCropConfig},
    "optim": {"optim": OptimConfig},
    "schedule": {"schedule": ScheduleConfig},
    "trainer": {"trainer": TrainerConfig},
    "distributed": {"distributed": DistributedConfig},
    "launcher": {"local": LauncherConfig, "slurm": SlurmLauncherConfig},
    "eval": {
        "knn": KNNEvalConfig,
        "extract": ExtractEvalConfig,
        "embed": EmbedEvalConfig,
        "linear": LinearEvalConfig,
        "lowshot": LowShotEvalConfig,
        "finetune": FinetuneEvalConfig,
    },
}.items():
    for _name, _schema in _options.items():
        register_schema(_group, _name, _schema)

# Sections of the primary configs with one fixed schema (validated like groups).
SECTION_SCHEMAS: dict[str, type] = {
    "run": RunConfig,
    "tracking": TrackingConfig,
    "model": ModelConfig,
    "plan": PlanConfig,
    "monitor": MonitorConfig,
}
PRIMARY_SCHEMAS: dict[str, type] = {
    "train_schema": TrainConfig,
    "eval_schema": EvalConfig,
    "plan_schema": PlanRootConfig,
}

__all__ = [
    "PRIMARY_SCHEMAS",
    "SECTION_SCHEMAS",
    "DataConfig",
    "DistributedConfig",
    "EmbedEvalConfig",
    "EvalConfig",
    "ExtractEvalConfig",
    "FeatureEvalConfig",
    "FinetuneEvalConfig",
    "KNNEvalConfig",
    "LauncherConfig",
    "LinearEvalConfig",
    "LowShotEvalConfig",
    "ModelConfig",
    "MonitorConfig",
    "MultiCropConfig",
    "OptimConfig",
    "PlanConfig",
    "PlanRootConfig",
    "RunConfig",
    "ScheduleConfig",
    "SlurmLauncherConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainerConfig",
]  # fmt: skip
