"""Row 4 of ``make bench``: data pipeline images/s and the share of step time spent waiting.

    python bench/pipeline.py [--quick] [--steps 12] [--workers 2]

SimCLR on ResNet-18 (32 px views, the throughput benchmark's first case) trained by our loop's
own pieces on a generated folder of 64 px PNG images, for each augmentation backend:

- ``loader images/s``: batches drawn (decode, augment, collate; the batched backend's GPU/CPU
  transform included) with no training step: what the pipeline can deliver.
- ``wait fraction``: in a loop that trains on those batches, the time spent getting the next
  batch over the whole step time (0: the model never waits for data).

When the data engineer's ``bench/data_pipeline.py`` is present, ``bench/suite.py`` runs it too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import quick_mode, write_results
from bench.steps import Case, Contenders
from sslframe.engine.stop import StopRequest
from sslframe.methods import StepContext


def image_folder(count: int, size: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="sslframe_pipeline_")) / "images"
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(count // 2):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"class_{c}/{i:05d}.png")
    return root


def measure(backend: str, workers: int, steps: int, data: Path, case: Case) -> dict[str, Any]:
    contenders = Contenders(
        case,
        torch.device("cpu"),
        [f"data.path={data}", f"data.num_workers={workers}", f"transform.backend={backend}"],
    )
    trainer = contenders.trainer("channels_last")
    batches = trainer.batches.from_step(lambda: trainer.step)
    next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        _, batch = next(batches)
        trainer.batches.crops(batch, trainer.step)
    loader_rate = steps * case.batch / (time.perf_counter() - start)
    signals = StopRequest()
    waits, totals = [], []
    for step in range(steps):
        start = time.perf_counter()
        epoch, batch = next(batches)
        crops = trainer.batches.crops(batch, trainer.step)
        waited = time.perf_counter() - start
        ctx = StepContext(step, epoch, trainer.steps_per_epoch, trainer.total_steps)
        trainer.train_step(crops, ctx, batch, signals)
        waits.append(waited)
        totals.append(time.perf_counter() - start)
    return {
        "backend": backend,
        "workers": workers,
        "loader_images_per_s": loader_rate,
        "train_images_per_s": case.batch / statistics.median(totals),
        "wait_fraction": sum(waits) / sum(totals),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=quick_mode())
    parser.add_argument("--steps", type=int, default=0, help="steps per measurement (default 12, quick 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 12)
    torch.set_num_threads(args.threads)
    case = Case("simclr", "resnet18", 8 if args.quick else 16, (16, 16) if args.quick else (32, 32))
    data = image_folder(case.batch * (2 * steps + 2), 64)
    rows = [measure(backend, args.workers, steps, data, case) for backend in ("sample", "batch")]
    notes = (
        f"{case.name}, {args.workers} loader workers, torch.set_num_threads({args.threads}), 64 px PNG images, "
        f"{steps} steps per measurement. Workers share the CPU with the training step."
    )
    print(write_results("pipeline", rows, notes).read_text())


if __name__ == "__main__":
    main()
