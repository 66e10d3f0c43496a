"""A skipped step changes nothing: state the forward computes (DINO's centre, SwAV's and MoCo's
queues, DeepCluster-v2's memory bank, batch-norm running statistics) is written only where the
step is not skipped, so a non-finite value injected inside the forward leaves every parameter,
buffer, per-rank state and optimizer state as it was, and training then goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from tests.helpers import TINY

SKIPPED = 2  # the step whose forward gets a NaN (queues are in use by then)

CASES = {
    # method overrides, the module whose output turns NaN (what that poisons without the gating)
    "dino-teacher": (["config=dino_resnet50", "head.hidden_dims=[32,32]", "method.out_dim=32"], "teacher_head"),
    "swav-queue": (["config=quickstart", "method.queue_length=16", "method.queue_start_epoch=0"], "head"),
    "mocov2-keys": (["config=mocov2_resnet50", "method.queue_length=32", "transform.local_crops=0"], "key_head"),
    "deepclusterv2-bank": (
        ["config=deepclusterv2_resnet50", "method.num_prototypes=[4,3]", "transform.local_crops=0"],
        "head",
    ),
    "simclr-batchnorm": (["config=quickstart_simclr"], "trunk.conv1"),  # the input of the stem's batch norm
}


def everything(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Parameters, buffers (persistent or not), per-rank method state and optimizer state."""
    method = trainer.method
    state = {f"param/{k}": v for k, v in method.named_parameters()}
    state.update({f"buffer/{k}": v for k, v in method.named_buffers()})
    state.update({f"rank/{k}": v for k, v in method.rank_state_dict().items()})
    for i, s in enumerate(trainer.optimizer.state.values()):
        state.update({f"optim/{i}/{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return {k: v.detach().clone() for k, v in state.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_nonfinite_forward_leaves_every_state_as_it_was(image_folder: Path, tmp_path: Path, case: str) -> None:
    overrides, module_name = CASES[case]
    cfg = compose_config(
        "train",
        [*overrides, *TINY, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}", "trainer.max_steps=5"],
    )
    trainer = Trainer(cfg)
    poisoned = trainer.method.get_submodule(module_name)
    original = trainer.train_step
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def step_with_nan(crops: list[torch.Tensor], ctx: object, *args: object) -> object:
        if ctx.step != SKIPPED:  # type: ignore[attr-defined]
            return original(crops, ctx, *args)  # type: ignore[arg-type]
        handle = poisoned.register_forward_hook(lambda _m, _i, out: out * math.nan)
        seen["before"] = everything(trainer)
        try:
            result = original(crops, ctx, *args)  # type: ignore[arg-type]
        finally:
            handle.remove()
        seen["after"] = everything(trainer)
        return result

    trainer.train_step = step_with_nan  # type: ignore[method-assign]
    result = trainer.fit()
    before, after = seen["before"], seen["after"]
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"a skipped step changed {changed[:5]}"
    assert result.skipped_steps == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    later = [r["loss"] for r in records if r["step"] > SKIPPED + 1]
    assert later and all(math.isfinite(v) and v > 0 for v in later), records
    assert all(torch.isfinite(v.float()).all() for v in everything(trainer).values())


def test_the_poisoned_state_would_change_without_the_gate(image_folder: Path, tmp_path: Path) -> None:
    """The injection reaches the state: with the step not skipped (flag 0), the batch-norm
    statistics and DINO's centre do take the non-finite values (so the test above can fail)."""
    overrides, module_name = CASES["dino-teacher"]
    cfg = compose_config(
        "train",
        [*overrides, *TINY, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}", "trainer.max_steps=1"],
    )
    trainer = Trainer(cfg)
    method = trainer.method
    handle = method.get_submodule(module_name).register_forward_hook(lambda _m, _i, out: out * math.nan)
    from sslframe.methods import StepContext

    crops = [torch.randn(8, 3, 16, 16) for _ in range(2)] + [torch.randn(8, 3, 8, 8) for _ in range(2)]
    ctx = StepContext(0, 0, 4, 4)
    method.train()
    method.training_step(crops, ctx)
    handle.remove()
    ctx.skipped = torch.zeros(())
    method.after_optimizer_step(ctx)
    assert not torch.isfinite(method.center).all()
    # The forward itself moves batch-norm statistics (the loop puts them back on a skip).
    handle = method.trunk.conv1.register_forward_hook(lambda _m, _i, out: out * math.nan)
    method.training_step(crops, ctx)
    handle.remove()
    assert not torch.isfinite(method.trunk.bn1.running_mean).all()
