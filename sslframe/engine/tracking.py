"""Experiment trackers as observers (``logger=[tensorboard,mlflow,wandb]``): MLflow and Weights &
Biases get the resolved config, every logged metric and, at the end, the run's pictures; a run
resumed after a requeue logs into the same tracked run (its id is kept in ``run.dir``). Neither
library is a dependency: asking for one that is not installed is a one-line error naming what
to install. Both work without a server: MLflow writes a local file store (``run.dir/mlruns``)
unless ``tracking.mlflow_uri`` names one; W&B runs offline (files in ``run.dir/wandb``) unless
``tracking.wandb_mode`` or the environment (``WANDB_MODE``, a configured API key) says otherwise.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sslframe.errors import UserError

LOGGERS = ("tensorboard", "mlflow", "wandb")


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as ``section.key`` -> text (trackers' parameter tables are flat)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k not in ("step", "time") and isinstance(v, (int, float))}


def _require(module: str, logger: str, install: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"logger={logger} needs {module}, which is not installed: pip install {install}") from None


class MLflowLog:
    """One MLflow run per sslframe run: parameters, metrics by step, pictures as artifacts."""

    def __init__(self, run_dir: Path, cfg: DictConfig) -> None:
        mlflow = _require("mlflow", "mlflow", "-e .[mlflow] (or mlflow-skinny)")
        self.run_dir = run_dir
        uri = cfg.tracking.mlflow_uri or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 asks for a database backend, but still writes a file store when told to;
            # a file store needs no server and no database, which is what a run dir wants.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(cfg.tracking.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(cfg.tracking.experiment)
        )
        id_file = run_dir / "mlflow_run_id"
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()  # resumed: the same tracked run
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            id_file.write_text(self.run_id)
            params = flat_params(cfg)
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start : start + 100])

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, record["step"]) for key, value in _numbers(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_end(self) -> None:
        for picture in run_pictures(self.run_dir):
            self.client.log_artifact(self.run_id, str(picture), "plots")
        self.client.log_artifact(self.run_id, str(self.run_dir / "config.yaml"))
        self.client.set_terminated(self.run_id, "FINISHED")


class WandbLog:
    """One W&B run per sslframe run (offline unless configured): config, metrics, pictures."""

    def __init__(self, run_dir: Path, cfg: DictConfig) -> None:
        wandb = _require("wandb", "wandb", "-e .[wandb]")
        self.wandb = wandb
        self.run_dir = run_dir
        mode = (
            cfg.tracking.wandb_mode or os.environ.get("WANDB_MODE") or ("online" if _wandb_configured() else "offline")
        )
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id)
        self.run = wandb.init(
            project=cfg.tracking.wandb_project,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        self.run.log(_numbers(record), step=record["step"])

    def on_end(self) -> None:
        pictures = {p.stem: self.wandb.Image(str(p)) for p in run_pictures(self.run_dir)}
        if pictures:
            self.run.log(pictures)
        self.run.finish()


def _wandb_configured() -> bool:
    return bool(os.environ.get("WANDB_API_KEY")) or (
        (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    )


def run_pictures(run_dir: Path) -> list[Path]:
    """The run's loss and learning-rate (and monitor) pictures, drawn now from metrics.jsonl."""
    from sslframe.eval.plots import plot_training, read_metrics

    records = read_metrics(run_dir)
    return plot_training(records, run_dir / "plots") if records else []


def check_loggers(names: Any) -> None:
    """Every name in ``logger`` is a known tracker, and the libraries it needs are installed
    (checked before any work starts)."""
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise UserError(f"bad value for 'logger': {unknown[0]}; valid choices: {', '.join(LOGGERS)}")
    if "mlflow" in names:
        _require("mlflow", "mlflow", "-e .[mlflow] (or mlflow-skinny)")
    if "wandb" in names:
        _require("wandb", "wandb", "-e .[wandb]")


def tracking_observers(run_dir: Path, cfg: DictConfig) -> list[Any]:
    """The MLflow and W&B observers ``cfg.logger`` names (TensorBoard is the observers module's)."""
    check_loggers(cfg.logger)
    trackers: list[Any] = []
    if "mlflow" in cfg.logger:
        trackers.append(MLflowLog(run_dir, cfg))
    if "wandb" in cfg.logger:
        trackers.append(WandbLog(run_dir, cfg))
    return trackers
