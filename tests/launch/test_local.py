"""launcher=local with launcher.procs=2: two torchrun-style processes on this machine (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch import launch
from sslframe.config import compose_config
from sslframe.distributed import checkpoint as ckpt
from tests.launch.common import tiny_job


def test_two_local_processes_train_one_run(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    overrides = tiny_job(image_folder, run, "launcher.procs=2", "trainer.max_steps=2")
    assert launch(compose_config("train", overrides), overrides) == 0
    assert "starting 2 processes on this machine" in capfd.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Two processes of 4 images each make one global batch of 8.
    assert [(r["step"], r["global_batch_size"]) for r in records] == [(1, 8), (2, 8)]
    assert ckpt.read_meta(run / "checkpoints" / ckpt.checkpoint_name(2))["world_size"] == 2
