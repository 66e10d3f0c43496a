"""Experiment trackers with the real libraries against local stores: MLflow (a file store in the
run dir) and W&B (offline) get the resolved config, every logged metric and the pictures, and a
resumed run logs into the same tracked run; a tracker that is not installed, or not known, is a
one-line error before any work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from sslframe.errors import UserError
from tests.helpers import TINY


def run(folder: Path, run_dir: Path, steps: int, *extra: str) -> None:
    args = ["config=quickstart", *TINY, "data=folder", f"data.path={folder}", f"run.dir={run_dir}"]
    Trainer(compose_config("train", [*args, f"trainer.max_steps={steps}", *extra])).fit()


def test_mlflow_gets_config_metrics_pictures_and_resumes_into_the_same_run(image_folder: Path, tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")  # installed by make test; the import error is tested below
    run_dir = tmp_path / "run"
    run(image_folder, run_dir, 3, "logger=[tensorboard,mlflow]")
    run(image_folder, run_dir, 5, "logger=[tensorboard,mlflow]")  # resumed from step 3
    client = mlflow.MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "sslframe"]
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_id == (run_dir / "mlflow_run_id").read_text().strip()
    assert tracked.data.params["method.name"] == "swav" and tracked.data.params["trainer.max_steps"] == "3"
    steps = [m.step for m in client.get_metric_history(tracked.info.run_id, "loss")]
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == logged == [1, 2, 3, 4, 5]
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "plots")}
    assert "plots/loss_lr.png" in artifacts and tracked.info.status == "FINISHED"
    assert (run_dir / "tensorboard").is_dir()


def test_wandb_offline_gets_config_and_metrics_and_resumes_into_the_same_run(
    image_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run(image_folder, run_dir, 3, "logger=[wandb]")
    first = (run_dir / "wandb_run_id").read_text().strip()
    run(image_folder, run_dir, 5, "logger=[wandb]")
    assert (run_dir / "wandb_run_id").read_text().strip() == first
    offline = sorted((run_dir / "wandb").glob(f"offline-run-*-{first}"))
    assert len(offline) == 2, "both sittings log the same run id (W&B merges them on sync)"
    # Offline, W&B keeps config and history in its run file (protobuf records: strings stay legible).
    records = (offline[0] / f"run-{first}.wandb").read_bytes()
    assert b"swav" in records and b"images_per_sec" in records and b"loss" in records
    assert list((offline[0] / "files" / "media" / "images").glob("loss_lr_*.png")), "the pictures"
    assert not (run_dir / "tensorboard").exists(), "logger=[wandb] leaves TensorBoard out"


def test_a_missing_or_unknown_tracker_is_one_line_before_any_work(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=r"bad value for 'logger': neptune; valid choices: tensorboard, mlflow, wandb"):
        run(image_folder, tmp_path / "a", 1, "logger=[neptune]")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(UserError, match=r"logger=mlflow needs mlflow, which is not installed: pip install"):
        run(image_folder, tmp_path / "b", 1, "logger=[mlflow]")
    assert not (tmp_path / "b").exists()
