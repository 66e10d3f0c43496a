"""DINO: the head's weight-normalised last layer, which crops the teacher sees, the centre, the
frozen last layer, the teacher's cosine momentum, and a short multi-crop run on generated images."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from sslframe.errors import UserError
from sslframe.losses.dino import dino_loss
from sslframe.methods import StepContext
from sslframe.methods.dino import DINO, DINOConfig
from sslframe.models.heads import DINOHead, MLPHeadConfig
from tests.methods.generated_views import one_thread, short_run, tiny_method


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def tiny_dino(batch_norm: bool = False, **method: object) -> DINO:
    head = MLPHeadConfig(hidden_dims=[32, 32], output_dim=16, batch_norm=batch_norm, activation="gelu")
    dino = tiny_method(DINO, DINOConfig(out_dim=64, **method), head)  # type: ignore[arg-type]
    assert isinstance(dino, DINO)
    return dino


def crops(batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(2)
    ]


def test_head_shapes_and_weight_normalised_last_layer() -> None:
    # Caron et al. 2021, appendix: 3-layer MLP (hidden 2048, GELU) to a 256-d bottleneck, L2
    # normalisation, then a weight-normalised linear layer whose norm g is fixed to 1.
    head = DINOHead(12, out_dim=100)
    linears = [m for m in head.mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 2048), (2048, 2048), (2048, 256)]
    assert head.last_layer.weight_g is None
    x = torch.randn(5, 12)
    # With unit-norm rows and a unit-norm input, every score is a cosine in [-1, 1].
    bottleneck = head.bottleneck(x)
    torch.testing.assert_close(bottleneck.norm(dim=1), torch.ones(5))
    rows = head.last_layer.weight_v / head.last_layer.weight_v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(head(x), bottleneck @ rows.t())
    learned = DINOHead(12, hidden_dims=[8], bottleneck_dim=4, out_dim=6, norm_last_layer=False)
    assert learned.last_layer.weight_g is not None and learned.last_layer.weight_g.requires_grad


def test_teacher_sees_global_crops_and_centre_follows_its_outputs() -> None:
    method = tiny_dino()
    with torch.no_grad():
        method.center.normal_()
    centre = method.center.clone()
    views = crops()
    out = method.training_step(views, StepContext(0, 3, 10, 100))
    with torch.no_grad():
        student = torch.cat(
            [method.head(method.trunk(torch.cat(views[:2]))), method.head(method.trunk(torch.cat(views[2:])))]
        )
        teacher = method.teacher_head(method.teacher_trunk(torch.cat(views[:2])))
    # Epoch 3 of a 30-epoch warmup: tau_t = 0.04 + 0.03 * 3 / 29 (the centre before this step).
    expected = dino_loss(student, teacher, centre, 0.1, 0.04 + 0.03 * 3 / 29, teacher_crops=2)
    torch.testing.assert_close(out.loss.detach(), expected)
    # The centre moves after the optimizer step (a skipped step must leave it), not in the forward.
    assert torch.equal(method.center, centre)
    method.after_optimizer_step(StepContext(0, 3, 10, 100))
    # Eq. 4 with m = 0.9, the mean over the 2 x 4 global-crop outputs.
    torch.testing.assert_close(method.center, 0.9 * centre + 0.1 * teacher.mean(dim=0, keepdim=True))
    assert "center" in method.state_dict()


def test_last_layer_is_frozen_during_the_first_epoch() -> None:
    method = tiny_dino()
    for epoch, frozen in ((0, True), (1, False)):
        ctx = StepContext(epoch * 10, epoch, 10, 100)
        method.training_step(crops(), ctx).loss.backward()
        method.before_optimizer_step(ctx)
        assert (method.head.last_layer.weight_v.grad is None) == frozen
        assert method.head.mlp.layers[0].weight.grad is not None
        method.zero_grad(set_to_none=True)


@pytest.mark.parametrize("step", [0, 40, 99])
def test_teacher_follows_the_cosine_momentum_schedule(step: int) -> None:
    # Sec. 3.1: lambda follows a cosine from 0.996 to 1 during training (as BYOL's tau).
    momentum = 1 - (1 - 0.996) * (math.cos(math.pi * step / 100) + 1) / 2
    method = tiny_dino()
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(torch.randn_like(p))
    teacher = [p.detach().clone() for p in method.teacher_head.parameters()]
    method.after_optimizer_step(StepContext(step, 0, 10, 100))
    for old, new, student in zip(teacher, method.teacher_head.parameters(), method.head.parameters(), strict=True):
        torch.testing.assert_close(new, momentum * old + (1 - momentum) * student.detach())


def test_short_multicrop_run_loss_falls_without_collapse() -> None:
    # At 16 px a random narrow ResNet gives every image nearly the same features; without batch
    # norm in the head (the authors' use_bn_in_head option) the teacher's outputs then coincide
    # and centering flattens them. 2 global + 2 local crops; the last layer is frozen for the
    # first 10 steps (one "epoch" of the run).
    run = short_run(tiny_dino(batch_norm=True), steps=16, lr=0.05, local_crops=2)
    assert sum(run.losses[-3:]) / 3 < 0.9 * sum(run.losses[:3]) / 3
    assert run.embedding_std > 0.2 / run.embedding_dim**0.5


def test_one_global_crop_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"transform\.global_crops=2"):
        tiny_dino().training_step(crops()[1:], StepContext(0, 0, 1, 1))


def test_state_dict_holds_the_centre_and_the_teacher() -> None:
    # A fresh method loaded from the state dict takes the same next step (an exact resume).
    method = tiny_dino()
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for step in range(2):
        method.training_step(crops(), StepContext(step, 0, 10, 100))
        method.after_optimizer_step(StepContext(step, 0, 10, 100))
    fresh = tiny_dino()
    fresh.load_state_dict(method.state_dict())
    ctx = StepContext(2, 0, 10, 100)
    torch.testing.assert_close(fresh.training_step(crops(), ctx).loss, method.training_step(crops(), ctx).loss)
    torch.testing.assert_close(fresh.center, method.center)


def test_head_batches_set_which_crops_share_the_heads_batch_norm_statistics() -> None:
    """head_batches: 'all' is one head call on every crop (the authors' multi-crop wrapper), 'crop'
    one call per crop (lightly's example), 'resolution' one per crop size. With batch norm in the
    head the three differ, each equal to its own calls made by hand; without it they agree."""
    views = crops()
    torch.manual_seed(0)
    reference = tiny_dino(batch_norm=True)
    features = torch.randn(len(views) * 4, reference.trunk.out_dim, generator=torch.Generator().manual_seed(3))
    per_crop = features.split(4)
    by_hand = {
        "all": reference.head(features),
        "crop": torch.cat([reference.head(f) for f in per_crop]),
        "resolution": torch.cat([reference.head(torch.cat(per_crop[:2])), reference.head(torch.cat(per_crop[2:]))]),
    }
    for mode, expected in by_hand.items():
        reference.cfg.head_batches = mode
        torch.testing.assert_close(reference._heads(reference.head, features, views), expected)
    assert not torch.allclose(by_hand["all"], by_hand["crop"], atol=1e-4)
    assert not torch.allclose(by_hand["all"], by_hand["resolution"], atol=1e-4)

    torch.manual_seed(0)
    plain = tiny_dino(batch_norm=False)
    outputs = []
    for mode in ("all", "resolution", "crop"):
        plain.cfg.head_batches = mode
        outputs.append(plain._heads(plain.head, features, views))
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0])


def test_trunk_batches_set_which_crops_share_the_trunks_batch_norm_statistics() -> None:
    """trunk_batches: 'resolution' is one trunk call per crop size (the authors' multi-crop
    wrapper), 'crop' one call per crop (lightly's example); each equals its calls made by hand, for
    the student's trunk and the teacher's, and with the trunk's batch norm the two differ."""
    views = crops()
    dino = tiny_dino()
    for trunk in (dino.trunk, dino.teacher_trunk):
        by_hand = {
            "resolution": torch.cat([trunk(torch.cat(views[:2])), trunk(torch.cat(views[2:]))]),
            "crop": torch.cat([trunk(v) for v in views]),
        }
        for mode, expected in by_hand.items():
            dino.cfg.trunk_batches = mode
            torch.testing.assert_close(dino._trunk(trunk, views), expected)
        assert not torch.allclose(by_hand["resolution"], by_hand["crop"], atol=1e-4)

    # In a training step: the per-crop setting gives the loss of per-crop calls made by hand.
    ctx = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=10)
    per_crop = tiny_dino(trunk_batches="crop", head_batches="crop")
    student = torch.cat([per_crop.head(per_crop.trunk(v)) for v in views])
    with torch.no_grad():
        teacher = torch.cat([per_crop.teacher_head(per_crop.teacher_trunk(v)) for v in views[:2]])
    expected = dino_loss(student, teacher, per_crop.center, 0.1, per_crop.teacher_temperature(1), 2)
    torch.testing.assert_close(per_crop.training_step(views, ctx).loss, expected)
    assert not torch.allclose(tiny_dino(head_batches="crop").training_step(views, ctx).loss, expected, atol=1e-4)


def test_a_step_runs_with_each_head_batching() -> None:
    for mode in ("all", "resolution", "crop"):
        torch.manual_seed(0)
        dino = tiny_dino(batch_norm=True, head_batches=mode)
        out = dino.training_step(crops(), StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=10))
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert dino.head.mlp.layers[0].weight.grad is not None
