"""A tiny real run on generated images: outputs, exact resume, and a falling loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sslframe.config import compose_config
from sslframe.distributed.checkpoint import latest_checkpoint, load_checkpoint, load_rank_state
from sslframe.engine.trainer import train
from tests.helpers import TINY, make_image_folder, run_tool


def overrides(data: Path, run: Path, *extra: str, experiment: str = "quickstart") -> list[str]:
    return [f"config={experiment}", *TINY, "data=folder", f"data.path={data}", f"run.dir={run}", *extra]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cli_run_writes_every_output(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_tool("train.py", *overrides(image_folder, run, "trainer.max_epochs=1", "trainer.checkpoint_every=2"))
    assert result.returncode == 0, result.stderr
    assert f"run dir: {run}" in result.stdout
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(image_folder) and cfg["method"]["name"] == "swav"
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("step", "epoch", "loss", "lr", "images_per_sec", "batch_size", "global_batch_size"):
        assert key in records[0]
    assert (run / "checkpoints" / "step_00000004" / "state" / ".metadata").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # Progress lines go to stderr when it is not a terminal.
    assert "step 4/4" in result.stderr


@pytest.mark.parametrize("method", ["swav", "simclr", "swav_batch_transform"])
def test_interrupted_run_resumes_exactly(image_folder: Path, tmp_path: Path, method: str) -> None:
    extra = ["trainer.max_epochs=2", "trainer.checkpoint_every=3"]
    if method == "swav":
        extra += ["transform.backend=sample"]
    if method == "swav_batch_transform":
        method = "swav"
        extra += ["transform.backend=batch", "data.num_workers=2"]
    if method == "swav":
        extra += ["method.queue_length=16", "method.queue_start_epoch=1"]
    experiment = "quickstart" if method == "swav" else "simclr_resnet50"
    full = tmp_path / "full"
    train(compose_config("train", overrides(image_folder, full, *extra, experiment=experiment)))
    parted = tmp_path / "parted"
    stopped = overrides(image_folder, parted, *extra, "trainer.max_steps=5", experiment=experiment)
    assert train(compose_config("train", stopped)).final_step == 5
    second = train(compose_config("train", overrides(image_folder, parted, *extra, experiment=experiment)))
    assert second.final_step == 8
    full_losses = {r["step"]: r["loss"] for r in read_metrics(full)}
    parted_losses = {r["step"]: r["loss"] for r in read_metrics(parted)}
    assert parted_losses == full_losses
    a, _ = load_checkpoint(latest_checkpoint(full / "checkpoints"))
    b, _ = load_checkpoint(latest_checkpoint(parted / "checkpoints"))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    if method == "swav":
        queue = load_rank_state(latest_checkpoint(parted / "checkpoints"), 0)["method"]
        assert int(queue["queue_filled"]) == 16 and queue["queue"].abs().sum() > 0


def test_resume_refuses_a_checkpoint_of_another_model(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config("train", overrides(image_folder, run, "trainer.max_steps=1")))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = run_tool("train.py", *overrides(image_folder, run, "trainer.max_steps=2", "trunk.arch=resnet34"))
    assert result.returncode == 2
    assert "different model config" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_loss_falls_on_a_learnable_dataset(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", classes=4, per_class=32, size=16)
    run = tmp_path / "run"
    train(
        compose_config(
            "train",
            overrides(
                data,
                run,
                "trainer.max_epochs=6",
                "optim.lr=0.3",
                "method.num_prototypes=[8]",
                "method.freeze_prototypes_steps=2",
                "data.batch_size=32",
                "trainer.checkpoint_every=1000",
            ),
        )
    )
    losses = [r["loss"] for r in read_metrics(run)]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
