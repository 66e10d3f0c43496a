"""A run resumed on fewer ranks than its checkpoint was written by (a job requeued on fewer
nodes): ``trainer.on_world_size_change`` keeps the global batch (the per-rank batch grows) or
the per-rank batch (the global batch, learning rate and step follow), and says so in
RUN/events.jsonl. Real torchrun processes (gloo) write the checkpoint; one process resumes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sslframe.config import compose_config
from sslframe.engine.trainer import WorldSizeChange, adapted_config
from sslframe.errors import UserError
from sslframe.optim.build import scaled_lr
from tests.distributed.harness import free_port
from tests.distributed.test_torchrun import finish, metrics, torchrun, train_args
from tests.helpers import ROOT


def _resume_on_one(data: Path, run: Path, *extra: str) -> None:
    args = train_args(data, run, "trainer.max_epochs=2", *extra)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def test_resume_on_fewer_ranks_keeps_the_global_or_the_per_rank_batch(image_folder: Path, tmp_path: Path) -> None:
    # 32 images, 2 ranks x 4: global batch 8, 4 steps per epoch; stopped after step 3.
    written = tmp_path / "written"
    args = train_args(
        image_folder, written, "trainer.max_epochs=2", "trainer.max_steps=3", "trainer.checkpoint_every=3"
    )
    finish(torchrun("--nproc_per_node=2", f"--master_port={free_port()}", *args))

    keep_global = tmp_path / "keep_global"
    shutil.copytree(written, keep_global)
    _resume_on_one(image_folder, keep_global, "trainer.max_steps=5")
    (event,) = [json.loads(line) for line in (keep_global / "events.jsonl").read_text().splitlines()]
    assert event["event"] == "world_size_change" and event["policy"] == "keep_global_batch"
    assert event["world_size"] == [2, 1] and event["per_rank_batch"] == [4, 8] and event["global_batch"] == [8, 8]
    assert event["step"] == [3, 3]
    resumed = [r for r in metrics(keep_global) if r["step"] > 3]
    assert [r["step"] for r in resumed] == [4, 5]
    assert all(r["batch_size"] == 8 and r["global_batch_size"] == 8 for r in resumed)

    keep_rank = tmp_path / "keep_rank"
    shutil.copytree(written, keep_rank)
    _resume_on_one(image_folder, keep_rank, "trainer.on_world_size_change=keep_per_rank_batch", "trainer.max_steps=8")
    (event,) = [json.loads(line) for line in (keep_rank / "events.jsonl").read_text().splitlines()]
    # Global batch 4: 8 steps per epoch; 3 steps of 8 images = 24 images seen = step 6 of 4.
    assert event["per_rank_batch"] == [4, 4] and event["global_batch"] == [8, 4] and event["step"] == [3, 6]
    resumed = [r for r in metrics(keep_rank) if r["global_batch_size"] == 4]
    assert [r["step"] for r in resumed] == [7, 8]
    # The learning rate follows the global batch (the config's scaling from optim.base_batch_size).
    cfg = compose_config("train", train_args(image_folder, keep_rank)[1:])
    assert event["peak_lr"] == pytest.approx(scaled_lr(cfg.optim, 4)) and scaled_lr(cfg.optim, 4) < scaled_lr(
        cfg.optim, 8
    )


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    cfg = OmegaConf.create({"data": {"batch_size": 4}})
    change = WorldSizeChange("ckpt", 3, world_size=2, per_rank_batch=4, policy="keep_global_batch")
    assert adapted_config(cfg, change, 4).data.batch_size == 2 and cfg.data.batch_size == 4
    with pytest.raises(UserError, match=r"global batch of 8 .* does not split over 3 ranks"):
        adapted_config(cfg, change, 3)
    per_rank = WorldSizeChange("ckpt", 3, world_size=2, per_rank_batch=4, policy="keep_per_rank_batch")
    assert adapted_config(cfg, per_rank, 3) is cfg
