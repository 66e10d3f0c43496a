"""SwAV's per-step state: prototype freezing and normalisation, the queue, the checkpointed state."""

from __future__ import annotations

import torch

from sslframe.config import compose_config
from sslframe.methods import StepContext, build_method
from sslframe.methods.swav import SwAV
from tests.helpers import TINY


def tiny_swav(*extra: str) -> SwAV:
    cfg = compose_config("train", ["config=quickstart", *TINY, "data=folder", "data.path=unused", *extra])
    method = build_method(cfg)
    assert isinstance(method, SwAV)
    return method


def crops(batch: int = 8) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, 16, 16) for _ in range(2)] + [torch.randn(batch, 3, 8, 8) for _ in range(2)]


def test_prototypes_frozen_then_trained_and_always_normalised() -> None:
    method = tiny_swav("method.freeze_prototypes_steps=1")
    opt = torch.optim.SGD(method.parameters(), lr=1.0)
    weights = method.prototypes.heads[0].weight
    for step in range(2):
        ctx = StepContext(step, 0, 10, 10)
        before = weights.detach().clone()
        method.training_step(crops(), ctx).loss.backward()
        method.before_optimizer_step(ctx)
        assert (weights.grad is None) == (step == 0)
        opt.step()
        opt.zero_grad()
        method.after_optimizer_step(ctx)
        assert torch.allclose(before, weights, atol=1e-6) == (step == 0)
        torch.testing.assert_close(weights.norm(dim=1), torch.ones(weights.shape[0]))


def test_queue_fills_from_its_start_epoch_and_is_saved_per_rank() -> None:
    method = tiny_swav("method.queue_length=16", "method.queue_start_epoch=1")
    assert method.queue.shape == (2, 16, 16)
    for step, epoch, filled in ((0, 0, 0), (1, 1, 8), (2, 1, 16)):
        ctx = StepContext(step, epoch, 10, 10)
        method.training_step(crops(), ctx)
        method.after_optimizer_step(ctx)  # where the queue is written (unless the step is skipped)
        assert int(method.queue_filled) == filled
    # The queue is per-rank state: outside the shared state dict, in the rank state dict.
    assert "queue" not in method.state_dict()
    state = method.rank_state_dict()
    assert set(state) == {"queue", "queue_filled"}
    fresh = tiny_swav("method.queue_length=16", "method.queue_start_epoch=1")
    fresh.load_rank_state_dict({k: v.clone() for k, v in state.items()})
    assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_filled) == 16
    fresh.load_rank_state_dict(None)  # a rank the checkpoint had no state for starts afresh
    assert int(fresh.queue_filled) == 0 and fresh.queue.abs().sum() == 0


def test_full_queue_changes_the_codes() -> None:
    torch.manual_seed(0)
    method = tiny_swav("method.queue_length=16", "method.queue_start_epoch=0").eval()
    batch = crops()
    ctx = StepContext(0, 0, 10, 10)
    without = method.training_step(batch, ctx).loss  # queue empty: codes from the batch alone
    method.load_rank_state_dict({"queue": torch.randn_like(method.queue), "queue_filled": torch.tensor(16)})
    with_queue = method.training_step(batch, ctx).loss
    assert not torch.isclose(without, with_queue)
