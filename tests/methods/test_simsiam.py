"""SimSiam: its projector and predictor shapes, the loss on the method's own outputs, and a
short run on generated images."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslframe.methods import StepContext
from sslframe.methods.simsiam import SimSiam, SimSiamConfig
from sslframe.models.heads import MLPHeadConfig
from tests.methods.generated_views import one_thread, short_run, tiny_method


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def tiny_simsiam(predictor_hidden: int = 512) -> SimSiam:
    # The paper's projector shape (sec. 3) at a tiny width.
    head = MLPHeadConfig(hidden_dims=[32, 32], output_dim=16, last_batch_norm=True)
    method = tiny_method(SimSiam, SimSiamConfig(predictor_hidden_dims=[predictor_hidden]), head)
    assert isinstance(method, SimSiam)
    return method


def test_projector_ends_in_batch_norm_and_predictor_is_a_bottleneck() -> None:
    # Chen & He 2021, sec. 3: 3-layer projector with BN on every layer including the output;
    # predictor with a 512-wide hidden layer (the method's default).
    method = tiny_simsiam()
    layers = list(method.head.layers)
    assert sum(isinstance(m, nn.Linear) for m in layers) == 3 and isinstance(layers[-1], nn.BatchNorm1d)
    linears = [m for m in method.predictor.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 512), (512, 16)]


def test_loss_is_the_symmetric_negative_cosine_with_stop_gradient() -> None:
    method = tiny_simsiam(predictor_hidden=8)
    g = torch.Generator().manual_seed(0)
    v1, v2 = (torch.randn(8, 3, 16, 16, generator=g) for _ in range(2))
    out = method.training_step([v1, v2], StepContext(0, 0, 10, 10))
    with torch.no_grad():
        z1, z2 = (method.head(method.trunk(v)) for v in (v1, v2))
        p1, p2 = method.predictor(z1), method.predictor(z2)
    # Eq. 3: L = D(p1, z2)/2 + D(p2, z1)/2, D(p, z) = -cos(p, z).
    expected = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    torch.testing.assert_close(out.loss.detach(), expected)


def test_short_run_loss_falls_without_collapse() -> None:
    run = short_run(tiny_simsiam(predictor_hidden=8), steps=20, lr=0.05)
    # The loss starts near 0 (random directions) and heads towards -1.
    assert sum(run.losses[-3:]) / 3 < sum(run.losses[:3]) / 3 - 0.1
    assert run.embedding_std > 0.2 / run.embedding_dim**0.5
