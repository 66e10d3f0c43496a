"""Observers read what the loop reports and never change training (docs/architecture.md, principle 7)."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.distributed import ProcessGroup

from sslframe.distributed.collectives import all_gather_cat, all_reduce_sum


class MetricsWindow:
    """The numbers of one logging interval, kept on the device until it ends: the loss summed over
    the interval's finite steps (a skipped step's loss is left out), their count, and the images
    seen. ``record`` reduces them over the ranks (one collective per interval) and starts anew."""

    def __init__(self, device: torch.device, group: ProcessGroup | None) -> None:
        self.group = group
        self.loss_sum = torch.zeros((), device=device)
        self.finite_steps = torch.zeros((), device=device)
        self.images = 0
        self.start = time.monotonic()

    def add(self, loss: torch.Tensor, nonfinite: torch.Tensor, images: int) -> None:
        finite = nonfinite == 0
        self.loss_sum += torch.where(finite, loss.detach().float(), 0.0)
        self.finite_steps += finite
        self.images += images

    def record(self) -> dict[str, float]:
        """``loss`` (the mean over every rank's finite steps) and ``images_per_sec`` of the interval."""
        totals = all_reduce_sum(torch.stack([self.loss_sum, self.finite_steps]), self.group).tolist()
        now = time.monotonic()
        record = {"loss": totals[0] / max(totals[1], 1.0), "images_per_sec": self.images / max(now - self.start, 1e-9)}
        self.loss_sum.zero_()
        self.finite_steps.zero_()
        self.images, self.start = 0, now
        return record


def peak_memory_gb(device: torch.device) -> float:
    """This process's peak memory: CUDA memory allocated on ``device``, or resident memory (RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def rank_spread(values: torch.Tensor, name: str) -> dict[str, float]:
    """``name_max``, ``name_min`` over the ranks and ``name_max_rank`` (the rank with the most)."""
    top = int(values.argmax())
    return {f"{name}_max": float(values[top]), f"{name}_min": float(values.min()), f"{name}_max_rank": top}


class RankTimes:
    """Per-rank times of one logging interval, for finding stragglers: seconds the loop waited for
    its next batch (``data_wait_s``) and seconds of the rest of its steps (``step_s``), each summed
    over the interval, and peak memory. ``record`` gathers the three numbers of every rank (one
    small collective per interval) and reports each one's largest and smallest value and the rank
    with the largest. Under synchronous collectives a fast rank waits for a slow one inside the
    step, so ``step_s`` tells the job's pace more than who is slow; ``data_wait_s`` is each rank's
    own (a slow disk or decoder on one node shows as that rank's wait)."""

    def __init__(self, device: torch.device, group: ProcessGroup | None) -> None:
        self.device, self.group = device, group
        self.data_wait = 0.0
        self.step = 0.0

    def add(self, data_wait: float, step: float) -> None:
        self.data_wait += data_wait
        self.step += step

    def record(self) -> dict[str, float]:
        mine = torch.tensor([[self.data_wait, self.step, peak_memory_gb(self.device)]], device=self.device)
        every = all_gather_cat(mine, self.group).cpu()
        self.data_wait = self.step = 0.0
        return {
            **rank_spread(every[:, 0], "data_wait_s"),
            **rank_spread(every[:, 1], "step_s"),
            **rank_spread(every[:, 2], "memory_gb"),
        }


class Observer(Protocol):
    def on_start(self, start_step: int, total_steps: int) -> None: ...

    def on_log(self, record: dict[str, Any]) -> None: ...

    def on_end(self) -> None: ...


class JSONLinesLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the run

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")

    def on_end(self) -> None:
        self.file.close()


class TensorBoardLog:
    """Scalars under ``train/`` in ``run.dir/tensorboard``."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def on_start(self, start_step: int, total_steps: int) -> None:
        pass

    def on_log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def on_end(self) -> None:
        self.writer.close()


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ConsoleProgress:
    """A progress bar with ETA on a terminal; one plain line per logged step otherwise."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: Any = None
        self.start_time = 0.0
        self.start_step = 0
        self.total = 0

    def on_start(self, start_step: int, total_steps: int) -> None:
        self.start_time = time.monotonic()
        self.start_step, self.total = start_step, total_steps
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, file=self.stream, dynamic_ncols=True, unit="step")

    def on_log(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(record["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}")
            return
        done = record["step"] - self.start_step
        elapsed = time.monotonic() - self.start_time
        eta = elapsed / max(done, 1) * (self.total - record["step"])
        print(
            f"step {record['step']}/{self.total} epoch {record['epoch']} loss {record['loss']:.4f} "
            f"lr {record['lr']:.4g} {record['images_per_sec']:.0f} img/s eta {_fmt_duration(eta)}",
            file=self.stream,
            flush=True,
        )

    def on_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def default_observers(run_dir: Path, cfg: Any, is_main: bool) -> list[Observer]:
    """What a run reports to, on its first rank: metrics.jsonl and the console always, and the
    ``logger`` list's trackers (TensorBoard, MLflow, W&B; ``cfg`` is the resolved config)."""
    if not is_main:
        return []
    from sslframe.engine.tracking import tracking_observers

    observers: list[Observer] = [JSONLinesLog(run_dir / "metrics.jsonl"), ConsoleProgress(cfg.trainer.progress)]
    if "tensorboard" in cfg.logger:
        observers.append(TensorBoardLog(run_dir / "tensorboard"))
    return observers + tracking_observers(run_dir, cfg)
