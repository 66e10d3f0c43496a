"""The training step never waits for the device: a non-finite loss skips the update on the device
(optimizers and EMA targets gated by a flag tensor), and the loop reads each step's flags one step
later, or at logging and checkpoint steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from sslframe.models.ema import ema_update_
from sslframe.optim.build import OPTIMIZERS, parameter_groups, step_unless
from tests.helpers import TINY

# Everything through which the host reads a tensor's value (and so waits for the device).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: object, _name: str = name, _original: object = original) -> object:
            calls.append(_name)
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize(
    "overrides",
    [
        ["config=quickstart"],  # SwAV, LARS
        ["config=quickstart", "method.queue_length=16", "method.queue_start_epoch=0"],  # full from step 3
        ["config=quickstart_simclr", "optim=sgd"],
        ["config=byol_resnet50", "method.predictor_hidden_dims=[32]", "transform.local_crops=0", "optim=adamw"],
        ["config=dino_resnet50", "head.hidden_dims=[32,32]", "method.out_dim=32"],  # EMA teacher, centre
        ["config=mocov2_resnet50", "method.queue_length=32", "transform.local_crops=0"],  # EMA keys, queue
    ],
    ids=["swav-lars", "swav-queue", "simclr-sgd", "byol-adamw", "dino", "mocov2"],
)
def test_train_step_reads_nothing_from_the_device(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]
) -> None:
    cfg = compose_config(
        "train",
        [*overrides, *TINY, "data=folder", f"data.path={image_folder}", f"run.dir={tmp_path}", "trainer.max_steps=3"],
    )
    trainer = Trainer(cfg)
    reads: list[list[str]] = []
    original = trainer.train_step

    def watched(*args: object) -> object:
        with pytest.MonkeyPatch.context() as patch:
            calls = count_host_reads(patch)
            result = original(*args)  # type: ignore[arg-type]
        reads.append(calls)
        return result

    monkeypatch.setattr(trainer, "train_step", watched)
    trainer.fit()
    assert len(reads) == 3 and reads == [[], [], []], reads


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))


def optimizer_for(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    cfg = compose_config("train", [f"optim={name}"]).optim
    groups = parameter_groups(model, 0.01, True)
    optimizer = OPTIMIZERS.get(name)(groups, cfg)
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    return optimizer


def set_grads(model: torch.nn.Module, value: float | None = None) -> None:
    for i, p in enumerate(model.parameters()):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        p.grad = torch.full_like(p, value) if value is not None else g


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    state = [t.clone() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return [p.detach().clone() for p in model.parameters()] + state


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_a_skipped_step_leaves_weights_and_state_bit_identical(name: str) -> None:
    model = tiny_model()
    optimizer = optimizer_for(name, model)
    for value in (None, math.nan, math.inf):
        set_grads(model)
        step_unless(optimizer, torch.zeros(1))  # a real step first, so the state exists
        before = snapshot(model, optimizer)
        set_grads(model, value)
        step_unless(optimizer, torch.ones(1))
        after = snapshot(model, optimizer)
        assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not hasattr(optimizer, "found_inf"), "the flag is removed after the step"


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_a_step_that_is_not_skipped_is_the_plain_step(name: str) -> None:
    """Two steps through ``step_unless(flag 0)`` against the same optimizer's plain ``step()``
    (for LARS, its ungated code path; for SGD/AdamW, PyTorch's fused kernel either way)."""
    gated_model, plain_model = tiny_model(), tiny_model()
    gated, plain = optimizer_for(name, gated_model), optimizer_for(name, plain_model)
    for _ in range(2):
        set_grads(gated_model)
        set_grads(plain_model)
        step_unless(gated, torch.zeros(1))
        plain.step()
    for a, b in zip(gated_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_first_sgd_step_after_a_skipped_one_is_the_usual_first_step() -> None:
    """PyTorch's fused SGD leaves momentum buffers uninitialised when its first step is
    skipped; ours start at zero, so the first real step is buffer = gradient, as always."""
    skipped_model, fresh_model = tiny_model(), tiny_model()
    skipped, fresh = optimizer_for("sgd", skipped_model), optimizer_for("sgd", fresh_model)
    set_grads(skipped_model, math.nan)
    step_unless(skipped, torch.ones(1))
    for model, optimizer in ((skipped_model, skipped), (fresh_model, fresh)):
        set_grads(model)
        step_unless(optimizer, torch.zeros(1))
    for a, b in zip(skipped_model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ema_update_is_gated_by_the_skip_flag() -> None:
    online, target = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(3.0)
    before = [t.clone() for t in target.state_dict().values()]
    ema_update_(target, online, 0.9, torch.ones(1))
    assert all(torch.equal(a, b) for a, b in zip(before, target.state_dict().values(), strict=True))
    reference = tiny_model()
    ema_update_(reference, online, 0.9)
    ema_update_(target, online, 0.9, torch.zeros(1))
    for a, b in zip(reference.state_dict().values(), target.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
