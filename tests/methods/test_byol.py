"""BYOL: the symmetric loss on the method's own outputs, the target's cosine momentum schedule,
and a short run on generated images."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.methods import StepContext
from sslframe.methods.byol import BYOL, BYOLConfig
from sslframe.models.heads import MLPHeadConfig
from tests.methods.generated_views import one_thread, short_run, tiny_method


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def tiny_byol() -> BYOL:
    method = tiny_method(BYOL, BYOLConfig(predictor_hidden_dims=[32]), MLPHeadConfig(hidden_dims=[32], output_dim=16))
    assert isinstance(method, BYOL)
    return method


def test_loss_is_the_symmetrised_regression_of_the_target() -> None:
    method = tiny_byol()
    g = torch.Generator().manual_seed(0)
    v1, v2 = (torch.randn(8, 3, 16, 16, generator=g) for _ in range(2))
    out = method.training_step([v1, v2], StepContext(0, 0, 10, 10))
    with torch.no_grad():
        p1, p2 = (method.predictor(method.head(method.trunk(v))) for v in (v1, v2))
        t1, t2 = (method.target_head(method.target_trunk(v)) for v in (v1, v2))
    # Grill et al. 2020, eq. 2 and the symmetrised L + L~: ||p1^ - t2^||^2 + ||p2^ - t1^||^2.
    expected = ((F.normalize(p1, dim=1) - F.normalize(t2, dim=1)) ** 2).sum(1).mean() + (
        (F.normalize(p2, dim=1) - F.normalize(t1, dim=1)) ** 2
    ).sum(1).mean()
    torch.testing.assert_close(out.loss.detach(), expected)
    out.loss.backward()
    assert all(p.grad is None for p in method.target_head.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())


@pytest.mark.parametrize("step", [0, 25, 50, 99, 100])
def test_target_follows_the_cosine_momentum_schedule(step: int) -> None:
    # Grill et al. 2020, sec. 3.2: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, tau_base 0.996.
    total = 100
    tau = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2
    method = tiny_byol()
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(torch.randn_like(p))
    target = [p.detach().clone() for p in method.target_head.parameters()]
    method.after_optimizer_step(StepContext(step, 0, 10, total))
    for old, new, online in zip(target, method.target_head.parameters(), method.head.parameters(), strict=True):
        torch.testing.assert_close(new, tau * old + (1 - tau) * online.detach())


def test_short_run_loss_falls_without_collapse() -> None:
    run = short_run(tiny_byol(), steps=20, lr=0.05)
    assert sum(run.losses[-3:]) / 3 < 0.7 * sum(run.losses[:3]) / 3
    assert run.embedding_std > 0.2 / run.embedding_dim**0.5


def test_loss_weight_a_quarter_gives_the_gradient_of_half_the_mean_negative_cosine() -> None:
    # lightly's BYOL example trains on 0.5 * (-cos(p1, t2) - cos(p2, t1)) (batch means). Its gradient
    # is a quarter of the paper's (2 - 2 cos) summed over the pairs, so loss_weight=0.25 must match it.
    g = torch.Generator().manual_seed(1)
    v1, v2 = (torch.randn(8, 3, 16, 16, generator=g) for _ in range(2))
    weighted = tiny_method(
        BYOL,
        BYOLConfig(predictor_hidden_dims=[32], loss_weight=0.25),
        MLPHeadConfig(hidden_dims=[32], output_dim=16),
    )
    weighted.training_step([v1, v2], StepContext(0, 0, 10, 10)).loss.backward()
    reference = tiny_byol()
    p1, p2 = (reference.predictor(reference.head(reference.trunk(v))) for v in (v1, v2))
    with torch.no_grad():
        t1, t2 = (reference.target_head(reference.target_trunk(v)) for v in (v1, v2))
    (0.5 * (-F.cosine_similarity(p1, t2).mean() - F.cosine_similarity(p2, t1).mean())).backward()
    pairs = list(zip(weighted.named_parameters(), reference.named_parameters(), strict=True))
    assert pairs and all(a.grad is not None for (_, a), _ in pairs if a.requires_grad)
    for (name, a), (_, b) in pairs:
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_loss_weight_must_be_positive() -> None:
    with pytest.raises(UserError, match=r"method\.loss_weight must be positive"):
        tiny_method(BYOL, BYOLConfig(predictor_hidden_dims=[32], loss_weight=0.0), MLPHeadConfig(output_dim=16))
