"""MoCo v2: loss and queue update against an independent computation, key-encoder momentum,
shared queue state, and a short run on generated images."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.methods import StepContext
from sslframe.methods.mocov2 import MoCoV2, MoCoV2Config
from sslframe.models.heads import MLPHeadConfig
from tests.methods.generated_views import one_thread, short_run, tiny_method


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def tiny_moco(queue_length: int = 24, momentum: float = 0.999, bn_splits: int = 1) -> MoCoV2:
    head = MLPHeadConfig(hidden_dims=[32], output_dim=16, batch_norm=False)
    cfg = MoCoV2Config(queue_length=queue_length, momentum=momentum, bn_splits=bn_splits)
    method = tiny_method(MoCoV2, cfg, head)
    assert isinstance(method, MoCoV2)
    return method


def views(batch: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)]


def test_loss_and_queue_update_equal_an_independent_computation() -> None:
    method = tiny_moco()
    method.queue_pointer.fill_(20)  # the 8 new keys wrap around the end of the 24-row queue
    queue = method.queue.clone()
    crops = views()
    out = method.training_step(crops, StepContext(0, 0, 10, 10))
    with torch.no_grad():
        q = F.normalize(method.head(method.trunk(crops[0])), dim=1)
        k = F.normalize(method.key_head(method.key_trunk(crops[1])), dim=1)
    # InfoNCE (He et al. 2020, eq. 1) with temperature 0.2 against the queue as it was.
    positive = (q * k).sum(dim=1) / 0.2
    negatives = q @ queue.t() / 0.2
    expected = (torch.log(positive.exp() + negatives.exp().sum(dim=1)) - positive).mean()
    torch.testing.assert_close(out.loss.detach(), expected)
    assert torch.equal(method.queue, queue), "keys are enqueued after the optimizer step, not in the forward"
    method.after_optimizer_step(StepContext(0, 0, 10, 10))
    rows = [20, 21, 22, 23, 0, 1, 2, 3]
    torch.testing.assert_close(method.queue[rows], k)
    torch.testing.assert_close(method.queue[4:20], queue[4:20])
    assert int(method.queue_pointer) == 4


def test_key_encoder_follows_the_query_encoder_with_momentum() -> None:
    method = tiny_moco()
    key_before = [p.detach().clone() for p in method.key_trunk.parameters()]
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    ctx = StepContext(0, 0, 10, 10)
    method.training_step(views(), ctx).loss.backward()
    assert all(p.grad is None for p in method.key_trunk.parameters())
    opt.step()
    method.after_optimizer_step(ctx)
    # theta_k <- m theta_k + (1 - m) theta_q with m = 0.999 (He et al. 2020, eq. 2).
    for old, key, query in zip(key_before, method.key_trunk.parameters(), method.trunk.parameters(), strict=True):
        torch.testing.assert_close(key, 0.999 * old + 0.001 * query.detach())


def test_queue_is_shared_state_in_the_checkpoint() -> None:
    method = tiny_moco()
    state = method.state_dict()
    assert state["queue"].shape == (24, 16) and "queue_pointer" in state
    assert method.rank_state_dict() == {}
    torch.testing.assert_close(state["queue"].norm(dim=1), torch.ones(24))


def test_short_run_loss_falls_without_collapse() -> None:
    # A key-encoder momentum of 0.9 lets the keys follow the queries within 24 steps (0.999 is
    # for 10^5 steps). The random initial queue makes the first loss low; the queue holds
    # generated keys from step 2 on, so the comparison starts there.
    run = short_run(tiny_moco(queue_length=32, momentum=0.9), steps=24, lr=0.02)
    assert sum(run.losses[-3:]) / 3 < 0.9 * sum(run.losses[2:5]) / 3
    # L2-normalised embeddings: about 1/sqrt(d) per dimension when spread out, 0 when collapsed
    # (Chen & He 2021, sec. 4.1 and fig. 2).
    assert run.embedding_std > 0.2 / run.embedding_dim**0.5


def test_one_global_view_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"transform\.global_crops=2"):
        tiny_moco().training_step([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8)], StepContext(0, 0, 1, 1))
    with pytest.raises(UserError, match="queue_length"):
        tiny_moco(queue_length=0)


def test_state_dict_holds_everything_the_next_step_needs() -> None:
    # Queue, pointer and key encoder live in the state dict: a fresh method loaded from it takes
    # the same next step (what an exact resume needs).
    method = tiny_moco()
    for step in range(2):
        method.training_step(views(), StepContext(step, 0, 10, 10))
        method.after_optimizer_step(StepContext(step, 0, 10, 10))
    fresh = tiny_moco()
    fresh.load_state_dict(method.state_dict())
    ctx = StepContext(2, 0, 10, 10)
    torch.testing.assert_close(fresh.training_step(views(), ctx).loss, method.training_step(views(), ctx).loss)
    torch.testing.assert_close(fresh.queue, method.queue)


def test_one_process_splits_batch_norm_and_shuffles_keys_across_the_groups() -> None:
    """Shuffle-BN's one-device substitute (the authors' CIFAR-10 demo, moco colab notebook:
    ``SplitBatchNorm`` in both encoders and ``_batch_shuffle_single_gpu`` for the keys): each of
    the ``bn_splits`` groups of the batch is normalised with its own statistics, and a key's group
    is drawn after a shuffle, so it is not its query's group."""
    splits, batch = 2, 8
    method = tiny_moco(bn_splits=splits)
    method.train()
    crops = views(batch)
    torch.manual_seed(11)
    out = method.training_step(crops, StepContext(0, 0, 10, 10))
    torch.manual_seed(11)
    order = torch.randperm(batch)  # the permutation the step drew first
    keys = torch.empty(batch, 16)
    with torch.no_grad():
        for g in range(splits):
            mine = torch.arange(g, batch, splits)  # group g: samples g, g + G, ...
            q = F.normalize(method.head(method.trunk(crops[0][mine])), dim=1)
            torch.testing.assert_close(out.embeddings[mine], q)
            members = order[mine]  # the samples whose keys the shuffled group g computes
            keys[members] = F.normalize(method.key_head(method.key_trunk(crops[1][members])), dim=1)
        whole = F.normalize(method.key_head(method.key_trunk(crops[1])), dim=1)
    method.after_optimizer_step(StepContext(0, 0, 10, 10))  # enqueues this step's keys
    torch.testing.assert_close(method.queue[:batch], keys)
    assert not torch.allclose(keys, whole), "the groups' statistics must differ from the batch's"


def test_split_batch_norm_needs_a_batch_that_divides() -> None:
    method = tiny_moco(bn_splits=3)
    with pytest.raises(UserError, match="bn_splits=3"):
        method.training_step(views(8), StepContext(0, 0, 10, 10))
