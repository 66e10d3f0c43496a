"""CUDA-only paths, run by ``pytest -m gpu`` (``bench/gpu.sh`` runs them first) and skipped where
no CUDA device is present: the training step without host synchronisation under
``torch.cuda.set_sync_debug_mode("error")``, bf16 and fp16 (GradScaler) steps, channels-last,
``torch.compile`` of the trunk blocks, SyncBatchNorm, pinned batches, and NCCL with one process
and, where two GPUs exist, two (DDP and FSDP2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from tests.distributed.harness import free_port
from tests.helpers import ROOT, TINY

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = ["trainer.device=cuda", "data.pin_memory=true"]


def tiny_cfg(tmp_path: Path, image_folder: Path, *overrides: str, steps: int = 3) -> object:
    args = [*TINY, *CUDA, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}"]
    return compose_config("train", [*overrides, *args, f"trainer.max_steps={steps}"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["config=quickstart", "method.queue_length=16", "method.queue_start_epoch=0"],
        ["config=quickstart_simclr", "optim=sgd"],
        ["config=dino_resnet50", "head.hidden_dims=[32,32]", "method.out_dim=32"],
        ["config=mocov2_resnet50", "method.queue_length=32", "transform.local_crops=0"],
        ["config=byol_resnet50", "method.predictor_hidden_dims=[32]", "transform.local_crops=0", "optim=adamw"],
    ],
    ids=["swav-queue", "simclr-sgd", "dino", "mocov2", "byol-adamw"],
)
def test_train_step_never_synchronises(image_folder: Path, tmp_path: Path, overrides: list[str]) -> None:
    """CUDA raises on any synchronising call inside the step (after the first, which may fill
    caches): no reads of device values, no copies from pageable host memory."""
    trainer = Trainer(tiny_cfg(tmp_path, image_folder, *overrides, steps=4))
    original = trainer.train_step
    calls = []

    def strict(*args: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            return original(*args)  # type: ignore[arg-type]
        torch.cuda.set_sync_debug_mode("error")
        try:
            return original(*args)  # type: ignore[arg-type]
        finally:
            torch.cuda.set_sync_debug_mode("default")

    trainer.train_step = strict  # type: ignore[method-assign]
    result = trainer.fit()
    assert len(calls) == 4 and math.isfinite(result.final_loss)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize(
    "extra", [[], ["trainer.compile=true"], ["trainer.channels_last=false"]], ids=["eager", "compile", "nchw"]
)
def test_mixed_precision_steps_train(image_folder: Path, tmp_path: Path, precision: str, extra: list[str]) -> None:
    cfg = tiny_cfg(tmp_path, image_folder, "config=quickstart", f"trainer.precision={precision}", *extra, steps=4)
    trainer = Trainer(cfg)
    assert (trainer.scaler is not None) == (precision == "fp16")
    result = trainer.fit()
    assert math.isfinite(result.final_loss) and result.skipped_steps <= 1  # fp16 may skip its first overflow
    assert all(torch.isfinite(p).all() for p in trainer.method.parameters())


def run_torchrun(nproc: int, tmp_path: Path, image_folder: Path, *overrides: str) -> list[dict]:
    """tools/train.py under torchrun (NCCL), one GPU per process; the run's metric records."""
    args = [*TINY, *CUDA, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}", "trainer.max_steps=3"]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += [f"--master_port={free_port()}", str(ROOT / "tools" / "train.py"), *overrides, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_nccl_one_process(image_folder: Path, tmp_path: Path) -> None:
    records = run_torchrun(1, tmp_path, image_folder, "config=quickstart")
    assert records[-1]["global_batch_size"] == records[-1]["batch_size"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize(
    "overrides",
    [
        ["distributed.strategy=ddp", "model.sync_bn=true"],
        ["distributed.strategy=ddp", "trainer.precision=fp16"],
        ["distributed.strategy=fsdp", "trainer.precision=bf16"],
        ["distributed.strategy=fsdp", "trainer.precision=fp16"],
    ],
    ids=["ddp-syncbn", "ddp-fp16", "fsdp-bf16", "fsdp-fp16"],
)
def test_nccl_two_processes(image_folder: Path, tmp_path: Path, overrides: list[str]) -> None:
    records = run_torchrun(2, tmp_path, image_folder, "config=quickstart", *overrides)
    assert records[-1]["global_batch_size"] == 2 * records[-1]["batch_size"]
    assert all(math.isfinite(r["loss"]) for r in records if r["step"] > 1)
