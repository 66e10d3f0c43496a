"""tools/train.py under torchrun: several processes, and two "nodes" on 127.0.0.1 (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.distributed.harness import free_port
from tests.helpers import ROOT, TINY


def torchrun(*args: str, timeout: int = 600) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        str(ROOT / "tools" / "train.py"),
        "config=quickstart",
        *TINY,
        "data=folder",
        f"data.path={data}",
        f"run.dir={run}",
        "trainer.max_epochs=1",
        "data.batch_size=4",
        *extra,
    ]


def finish(proc: subprocess.Popen[str], timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_with_ddp(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    finish(torchrun("--nproc_per_node=2", f"--master_port={port}", *train_args(image_folder, run)))
    records = metrics(run)
    # 32 images, 2 ranks x 4 per rank: 4 steps per epoch, global batch 8.
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[0]["batch_size"] == 4 and records[0]["global_batch_size"] == 8
    ckpt = run / "checkpoints" / "step_00000004"
    assert (ckpt / "rank_00000.pt").is_file() and (ckpt / "rank_00001.pt").is_file()
    assert json.loads((ckpt / "meta.json").read_text())["world_size"] == 2


def test_two_nodes_on_localhost(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    common = [
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=sslframe-test",
    ]
    nodes = [torchrun(*common, f"--node_rank={k}", *train_args(image_folder, run)) for k in (0, 1)]
    for node in nodes:
        finish(node)
    assert metrics(run)[-1]["global_batch_size"] == 8
    assert (run / "checkpoints" / "step_00000004" / "rank_00001.pt").is_file()


def test_checkpoint_from_two_ranks_resumes_on_one(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    port = free_port()
    finish(
        torchrun(
            "--nproc_per_node=2",
            f"--master_port={port}",
            *train_args(image_folder, run, "trainer.max_steps=2", "trainer.max_epochs=2"),
        )
    )
    # One process with twice the per-rank batch keeps the global batch and the sample order.
    single = subprocess.run(
        [sys.executable, *train_args(image_folder, run, "trainer.max_epochs=2", "data.batch_size=8")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert single.returncode == 0, single.stderr
    steps = [r["step"] for r in metrics(run)]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert metrics(run)[-1]["global_batch_size"] == 8
