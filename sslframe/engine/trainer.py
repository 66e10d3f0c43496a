"""The training loop: a plain, readable loop (forward, loss, backward, step, method updates).

Everything a resumed run needs is in its checkpoint: model and method state, optimizer,
iteration (which fixes the schedule and the data position) and RNG states.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sslframe.config import config_hash, save_config
from sslframe.data.build import build_train_data, build_views
from sslframe.distributed import checkpoint as ckpt
from sslframe.distributed.collectives import all_reduce_sum
from sslframe.distributed.device import pick_device
from sslframe.distributed.env import DistEnv, init_distributed, teardown
from sslframe.distributed.heartbeat import Heartbeat
from sslframe.distributed.parallelize import parallelize, plan_parallelism
from sslframe.distributed.run_state import RunState
from sslframe.engine import stop
from sslframe.engine.batches import StepBatches
from sslframe.engine.flags import FlagQueue, NormStatistics, StepCounters, dump_nonfinite_step, local_flags
from sslframe.engine.monitors import build_monitors
from sslframe.engine.observers import MetricsWindow, RankTimes, default_observers
from sslframe.engine.tracking import check_loggers
from sslframe.errors import UserError
from sslframe.methods import Method, StepContext, StepOutput, build_method
from sslframe.optim.build import build_optimizer, build_schedules, scaled_lr, set_lr, set_weight_decay, step_unless

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    final_step: int
    final_loss: float
    checkpoint: Path | None
    preempted: bool = False
    skipped_steps: int = 0


@dataclass
class WorldSizeChange:
    """A resume on another number of ranks than the checkpoint was written by."""

    checkpoint: str
    step: int
    world_size: int
    per_rank_batch: int
    policy: str

    @property
    def global_batch(self) -> int:
        return self.world_size * self.per_rank_batch


def world_size_change(cfg: DictConfig, run_dir: Path, world_size: int) -> WorldSizeChange | None:
    """The checkpoint this run resumes from, when it was written by another number of ranks."""
    choice = cfg.trainer.resume
    if choice == "never":
        return None
    path = ckpt.latest_checkpoint(run_dir / "checkpoints") if choice == "auto" else ckpt.resolve_checkpoint(choice)
    if path is None:
        return None
    meta = ckpt.read_checkpoint_meta(path)
    old_world = int(meta.get("world_size", world_size))
    if old_world == world_size:
        return None
    per_rank = int(meta.get("config", {}).get("data", {}).get("batch_size", cfg.data.batch_size))
    return WorldSizeChange(str(path), int(meta["step"]), old_world, per_rank, cfg.trainer.on_world_size_change)


def adapted_config(cfg: DictConfig, change: WorldSizeChange | None, world_size: int) -> DictConfig:
    """``cfg`` with the per-rank batch that ``trainer.on_world_size_change`` asks for."""
    if change is None or change.policy != "keep_global_batch":
        return cfg
    if change.global_batch % world_size:
        raise UserError(
            f"the checkpoint's global batch of {change.global_batch} ({change.world_size} ranks x "
            f"{change.per_rank_batch}) does not split over {world_size} ranks; resume on a divisor of it or with "
            "trainer.on_world_size_change=keep_per_rank_batch"
        )
    adapted = cfg.copy()
    adapted.data.batch_size = change.global_batch // world_size
    return adapted


class Trainer:
    def __init__(self, cfg: DictConfig) -> None:
        self.run_dir = Path(cfg.run.dir)
        check_loggers(cfg.logger)
        self.device = pick_device(cfg.trainer.device)
        self.env: DistEnv = init_distributed(self.device.type, cfg.distributed.timeout_s)
        self.world_change = world_size_change(cfg, self.run_dir, self.env.world_size)
        self.cfg = cfg = adapted_config(cfg, self.world_change, self.env.world_size)
        self.heartbeat = Heartbeat(self.env.rank, self.env.world_size, min(30.0, cfg.distributed.timeout_s / 4))
        # Every rank builds identical initial weights (FSDP shards them in place, without the
        # broadcast DDP does); other randomness then differs per rank.
        torch.manual_seed(cfg.trainer.seed)
        self.method: Method = build_method(cfg).to(self.device)
        torch.manual_seed(cfg.trainer.seed + 1000 * self.env.rank + 1)
        # Precision, sharding and memory layout: decided once, by the parallelism plan.
        self.plan = plan_parallelism(cfg, self.env, self.device, self.method.trunk)
        self.memory_format = self.plan.memory_format
        self.sharded = self.plan.sharded
        self.method.set_process_group(self.env.group)
        per_sample, batch_transform = build_views(cfg.transform)
        env = self.env
        self.data = build_train_data(
            cfg.data, per_sample, cfg.trainer.seed, env.rank, env.world_size, self.device.type, cfg.transform.decoder
        )
        self.method.bind_dataset(self.data.num_samples, self.env.rank, self.env.world_size)
        self.batches = StepBatches(
            self.data, batch_transform, self.device, self.memory_format, cfg.trainer.seed, env.rank
        )
        self.model: torch.nn.Module = parallelize(self.method, cfg, self.env, self.device, self.plan)
        self.batch_size = cfg.data.batch_size
        self.steps_per_epoch = self.data.steps_per_epoch
        # The schedule spans max_epochs; max_steps only stops the run early (a later run with a
        # larger max_steps resumes and continues exactly as if it had never stopped).
        self.total_steps = cfg.trainer.max_epochs * self.steps_per_epoch
        self.stop_step = self.total_steps
        if cfg.trainer.max_steps > 0:
            self.stop_step = min(self.total_steps, cfg.trainer.max_steps)
        self.global_batch = self.batch_size * self.env.world_size
        self.peak_lr = scaled_lr(cfg.optim, self.global_batch)
        self.optimizer = build_optimizer(self.method, cfg.optim, self.peak_lr)
        self.lr_schedule, self.wd_schedule = build_schedules(cfg, self.peak_lr, self.total_steps, self.steps_per_epoch)
        dtype = self.plan.autocast_dtype
        # Under FSDP the mixed-precision policy casts parameters; elsewhere autocast does.
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()
        self.scaler = self.plan.grad_scaler()
        self.step = 0
        self.counters = StepCounters(cfg.data.max_bad_fraction, cfg.data.path)
        self.flags = FlagQueue()
        self.norm_statistics = NormStatistics(self.method)
        state = (self.method, self.optimizer, self.scaler, config_hash(cfg), env.rank, env.group, self.device)
        self.run_state = RunState(self.run_dir / "checkpoints", *state)

    def recorded_config(self) -> DictConfig:
        """The config as this run uses it: ``trainer.precision`` as the plan resolved it."""
        recorded = self.cfg.copy()
        recorded.trainer.precision = self.plan.precision
        return recorded

    # ----------------------------------------------------------------------------- state
    def rank_state_dict(self) -> dict[str, Any]:
        """What each rank owns: RNG streams, per-rank method state, data counters."""
        return {
            "rng": ckpt.rng_state(),
            "method": self.method.rank_state_dict(),
            "counters": self.counters.state_dict(),
        }

    def save(self) -> Path:
        meta = {
            "epoch": self.step // self.steps_per_epoch,
            "world_size": self.env.world_size,
            "config": OmegaConf.to_container(self.recorded_config(), resolve=True),
        }
        return self.run_state.save(self.step, meta, self.rank_state_dict(), self.cfg.trainer.keep_last)

    def resume(self) -> Path | None:
        resumed = self.run_state.resume(self.cfg.trainer.resume)
        if resumed is None:
            return None
        own = resumed.rank_state
        if own is not None:
            ckpt.set_rng_state(own["rng"])
        self.method.load_rank_state_dict(own["method"] if own is not None else None)
        self.counters.load_state_dict(own["counters"] if own is not None else None, self.device, self.env.group)
        self.step = resumed.step
        if self.world_change is not None and Path(self.world_change.checkpoint) == Path(resumed.path):
            self._record_world_change(self.world_change)
        return resumed.path

    def _record_world_change(self, change: WorldSizeChange) -> None:
        """Map the step to the same images seen (it only moves under keep_per_rank_batch), log
        the change and append it to RUN/events.jsonl."""
        self.step = change.step * change.global_batch // self.global_batch
        event = {
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "event": "world_size_change",
            "checkpoint": change.checkpoint,
            "policy": change.policy,
            "world_size": [change.world_size, self.env.world_size],
            "per_rank_batch": [change.per_rank_batch, self.batch_size],
            "global_batch": [change.global_batch, self.global_batch],
            "step": [change.step, self.step],
            "peak_lr": self.peak_lr,
        }
        log.warning(
            "resumed on %d ranks from a checkpoint of %d (%s): per-rank batch %d -> %d, global batch %d -> %d, "
            "step %d -> %d",
            self.env.world_size, change.world_size, change.policy, change.per_rank_batch, self.batch_size,
            change.global_batch, self.global_batch, change.step, self.step,
        )  # fmt: skip
        if self.env.rank == 0:
            with (self.run_dir / "events.jsonl").open("a") as f:
                f.write(json.dumps(event) + "\n")

    # ------------------------------------------------------------------------------ loop
    def _data_pass(self) -> None:
        """One forward pass without gradients over the current epoch's batches, for a method
        that asks for it before training (DeepCluster-v2 fills its memory bank, as its authors
        do); the training step, its data position and the RNG streams are left as they were."""
        epoch = self.step // self.steps_per_epoch
        log.info("%s: one pass over the data before training", type(self.method).__name__)
        rng = ckpt.rng_state()
        with torch.no_grad():
            for i, batch in self.batches.epoch(epoch):
                ctx = StepContext(
                    i, epoch, self.steps_per_epoch, self.total_steps, self.batches.indices(batch), data_pass=True
                )
                with self.autocast:
                    self.model(self.batches.crops(batch, i, 1), ctx)
        ckpt.set_rng_state(rng)

    def fit(self) -> TrainResult:
        with self.heartbeat.watch(self.cfg.distributed.timeout_s), stop.listening() as signals:
            return self._fit(signals)

    def _fit(self, signals: stop.StopRequest) -> TrainResult:
        cfg = self.cfg
        # Resume first: a checkpoint that does not fit this config stops the run before
        # anything in run.dir (config.yaml included) is written.
        resumed = self.resume()
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.recorded_config(), self.run_dir / "config.yaml")
        if resumed is not None and self.env.is_main:
            log.info("resumed from %s at step %d", resumed, self.step)
        start_step = self.step
        if self.method.needs_data_pass():
            self._data_pass()
        observers = default_observers(self.run_dir, self.recorded_config(), self.env.is_main)
        for obs in observers:
            obs.on_start(self.step, self.stop_step)
        monitors = build_monitors(cfg, self.method.trunk, self.device, self.memory_format)
        log.info(
            "training to step %d of %d (%d per epoch), batch %d per process, global batch %d, peak lr %.4g",
            self.stop_step, self.total_steps, self.steps_per_epoch, self.batch_size, self.global_batch, self.peak_lr,
        )  # fmt: skip
        self.model.train()
        window = MetricsWindow(self.device, self.env.group)
        rank_times = RankTimes(self.device, self.env.group)
        last_loss = math.nan
        last_ckpt: Path | None = None
        batches = self.batches.from_step(lambda: self.step)
        stop = False
        while self.step < self.stop_step:
            self.heartbeat.phase, self.heartbeat.step = "data loading", self.step + 1
            waited = time.perf_counter()
            epoch, batch = next(batches)
            started = time.perf_counter()
            for bad in batch.bad:
                log.warning("rank %d skipped unreadable sample %s (%s)", self.env.rank, bad.key, bad.reason)
            ctx = StepContext(self.step, epoch, self.steps_per_epoch, self.total_steps, self.batches.indices(batch))
            lr = float(self.lr_schedule[self.step])
            set_lr(self.optimizer, lr)
            if self.wd_schedule is not None:
                set_weight_decay(self.optimizer, float(self.wd_schedule[self.step]))
            self.heartbeat.phase = "forward and backward (gradient reduction, the loss's collectives, the step's flags)"
            out, flags = self.train_step(self.batches.crops(batch, self.step), ctx, batch, signals)
            self.heartbeat.phase = "logging and checkpointing"
            self.step += 1
            for monitor in monitors:
                monitor.on_step(self.step, out, batch)
            window.add(out.loss, flags[0], batch.size * self.env.world_size)
            rank_times.add(started - waited, time.perf_counter() - started)
            log_now = self.step % cfg.trainer.log_every == 0 or self.step == self.stop_step
            checkpoint_now = self.step % cfg.trainer.checkpoint_every == 0
            # The previous step's flags (their copy finished long ago); this step's too where the
            # loop synchronises anyway, so logs and checkpoints see every step's counts.
            self.flags.put(self.step - 1, flags)
            stop = self.counters.apply(self.flags.take(keep_newest=not (log_now or checkpoint_now))) or stop
            if log_now:
                record = {"step": self.step, "epoch": epoch, **window.record(), "lr": lr, **rank_times.record()}
                last_loss = record["loss"]
                record.update(
                    world_size=self.env.world_size,
                    batch_size=self.batch_size,
                    global_batch_size=self.global_batch,
                    bad_samples=self.counters.bad_samples,
                    skipped_steps=self.counters.skipped_steps,
                    time=time.time(),
                )
                record.update({key: float(value) for key, value in out.logs.items()})
                for monitor in monitors:
                    record.update(monitor.read())
                for obs in observers:
                    obs.on_log(record)
            if stop:
                log.warning("signal %s received: checkpointing at step %d and exiting", signals.received, self.step)
                break
            if checkpoint_now and self.step < self.stop_step:
                last_ckpt = self.save()
        stop = self.counters.apply(self.flags.take()) or stop
        final = self.save() if self.step > start_step else resumed
        for obs in observers:
            obs.on_end()
        return TrainResult(
            self.run_dir,
            self.step,
            last_loss,
            final or last_ckpt,
            preempted=stop,
            skipped_steps=self.counters.skipped_steps,
        )

    def train_step(
        self, crops: list[torch.Tensor], ctx: StepContext, batch: Any, signals: stop.StopRequest
    ) -> tuple[StepOutput, torch.Tensor]:
        """One step on prepared crops: forward, backward, the step's flags over all ranks, and the
        update, skipped on the device where any rank's loss is non-finite. Returns the method's
        output and the flags (``[non-finite, stop, unreadable, samples]``, float64 on the device),
        which the loop reads later: nothing here waits for the device, except with
        ``trainer.on_nan=stop``, which reads the non-finite flag at once to stop at this step."""
        self.norm_statistics.save()
        with self.autocast:
            out = self.model(crops, ctx)
        if self.scaler is not None:
            self.scaler.scale(out.loss).backward()
        else:
            out.loss.backward()
        seen = batch.size + len(batch.bad)
        # With fp16, GradScaler finds overflowing gradients itself (and lowers its scale): only
        # the loss counts there.
        grads = [] if self.scaler is not None else [p.grad for p in self.method.parameters() if p.grad is not None]
        flags = local_flags(out.loss, grads, signals.received is not None, len(batch.bad), seen, self.device)
        all_reduce_sum(flags, self.env.group)
        if self.cfg.trainer.on_nan == "stop" and bool(flags[0] > 0):
            path = self.run_dir / f"nonfinite_step_{self.step:08d}_rank_{self.env.rank:05d}.pt"
            dump_nonfinite_step(path, ctx.step, ctx.epoch, crops, batch.labels, out.loss, self.method, ckpt.rng_state())
        self._update(ctx, flags[:1].clamp(max=1).float())
        return out, flags

    def _update(self, ctx: StepContext, skip: torch.Tensor) -> None:
        """Gradient clipping, optimizer step and the method's own updates (after backward), all
        no-ops on the device where ``skip`` is 1."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self.method.before_optimizer_step(ctx)
        if self.cfg.trainer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.trainer.grad_clip, foreach=True)
        if self.scaler is not None:
            # A non-finite loss leaves non-finite gradients, which GradScaler itself skips.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            step_unless(self.optimizer, skip)
        self.optimizer.zero_grad(set_to_none=True)
        self.norm_statistics.restore_where(skip)
        ctx.skipped = skip
        self.method.after_optimizer_step(ctx)


def train(cfg: DictConfig) -> TrainResult:
    finished = False
    try:
        result = Trainer(cfg).fit()
        finished = True
        return result
    finally:
        # The trainer (its model's sharded parameters hold the process group through their device
        # mesh) is gone before the group is destroyed, so the group's threads stop while the
        # interpreter is alive; a gloo group destroyed at interpreter exit can abort the process.
        gc.collect()
        teardown(wait_for_peers=finished)
