"""SIGTERM/SIGUSR1 (preemption): finish the step, checkpoint, exit 75, resume exactly.
Non-finite losses: skipped and counted, or a stop with a dump; never NaN in a checkpoint."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.distributed.checkpoint import complete_checkpoints, latest_checkpoint, load_checkpoint
from sslframe.engine.stop import PREEMPTED_EXIT
from sslframe.engine.trainer import Trainer
from sslframe.errors import UserError
from tests.faults.common import losses, run, start, train_cmd, wait_for_step


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_exits_for_requeue(
    fault_data: Path, reference: dict[int, float], tmp_path: Path, sig: int
) -> None:
    image_folder = fault_data
    cut = tmp_path / "cut"
    proc = start(train_cmd(image_folder, cut, "trainer.checkpoint_every=1000"))
    wait_for_step(cut, 5, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, out
    stopped = latest_checkpoint(cut / "checkpoints")
    assert stopped is not None, "the signal must leave a checkpoint"
    step = int(stopped.name.split("_")[1])
    assert step >= 5 and max(losses(cut)) == step, "the current step finishes and is checkpointed"
    code, out = run(train_cmd(image_folder, cut, "trainer.checkpoint_every=1000"))
    assert code == 0, out
    assert {s: v for s, v in losses(cut).items() if s > step} == {s: reference[s] for s in range(step + 1, 25)}


def tiny_trainer(data: Path, run_dir: Path, *extra: str) -> Trainer:
    args = train_cmd(data, run_dir, "trainer.max_steps=6", *extra)[1:]
    return Trainer(compose_config("train", args))


def poison(trainer: Trainer, at_step: int) -> None:
    """Make the loss of one step NaN, as a diverging batch would."""
    original = trainer.method.training_step

    def step(crops: list[torch.Tensor], ctx: object) -> object:
        out = original(crops, ctx)
        if ctx.step == at_step:  # type: ignore[attr-defined]
            out.loss = out.loss * math.nan
        return out

    trainer.method.training_step = step  # type: ignore[method-assign]


def test_nonfinite_loss_is_skipped_and_counted(image_folder: Path, tmp_path: Path) -> None:
    trainer = tiny_trainer(image_folder, tmp_path / "run", "trainer.on_nan=skip")
    poison(trainer, at_step=2)
    before = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    result = trainer.fit()
    assert result.skipped_steps == 1 and result.final_step == 6
    records = losses(tmp_path / "run")
    assert all(math.isfinite(v) for v in records.values())
    state, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert any(not torch.equal(before[k], v) for k, v in state["model"].items()), "the other steps trained"


def test_nonfinite_gradient_under_a_finite_loss_is_skipped(image_folder: Path, tmp_path: Path) -> None:
    """A finite loss whose gradient is NaN (as a bf16 backward can leave): the update is skipped
    too, not applied (LARS would otherwise write NaN into the weights)."""
    trainer = tiny_trainer(image_folder, tmp_path / "run", "trainer.on_nan=skip")
    original = trainer.method.training_step
    weight = next(trainer.method.trunk.parameters())

    def step(crops: list[torch.Tensor], ctx: object) -> object:
        out = original(crops, ctx)
        if ctx.step == 2:  # type: ignore[attr-defined]
            # sqrt at 0: value 0, derivative infinite; times 0 it is NaN in the weight's gradient.
            out.loss = out.loss + torch.sqrt((weight * 0).sum())
        return out

    trainer.method.training_step = step  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.skipped_steps == 1 and result.final_step == 6
    assert all(math.isfinite(v) for v in losses(tmp_path / "run").values())
    state, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_nonfinite_loss_stops_with_a_dump(image_folder: Path, tmp_path: Path) -> None:
    trainer = tiny_trainer(image_folder, tmp_path / "run", "trainer.on_nan=stop")
    poison(trainer, at_step=4)
    with pytest.raises(UserError, match="non-finite loss or gradient at step 4"):
        trainer.fit()
    dump = torch.load(tmp_path / "run" / "nonfinite_step_00000004_rank_00000.pt", weights_only=True)
    assert dump["step"] == 4 and len(dump["crops"]) == 4 and math.isnan(float(dump["loss"]))
    assert [p.name for p in complete_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000003"]


def test_a_checkpoint_never_holds_nonfinite_weights(image_folder: Path, tmp_path: Path) -> None:
    trainer = tiny_trainer(image_folder, tmp_path / "run")
    original = trainer.method.after_optimizer_step

    def corrupt(ctx: object) -> None:
        original(ctx)
        if ctx.step == 4:  # type: ignore[attr-defined]
            with torch.no_grad():
                next(trainer.method.trunk.parameters()).fill_(math.inf)

    trainer.method.after_optimizer_step = corrupt  # type: ignore[method-assign]
    with pytest.raises(UserError, match="NaN or infinity at step 6; no checkpoint written"):
        trainer.fit()
    assert [p.name for p in complete_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000003"]
