"""KoLeo (Sablayrolles et al. 2019, eq. 4): against a brute-force computation written here, safe
on duplicates, tiny batches and bfloat16, and over the global batch across two real processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist

from sslframe.losses.koleo import koleo_loss
from tests.distributed.harness import run_distributed


def brute_force(x: torch.Tensor) -> float:
    """-1/n sum_i log min_{j != i} |x_i/|x_i| - x_j/|x_j||, by loops in float64."""
    rows = [row / row.norm() for row in x.double()]
    total = 0.0
    for i, a in enumerate(rows):
        nearest = min(float((a - b).norm()) for j, b in enumerate(rows) if j != i)
        total += math.log(nearest)
    return -total / len(rows)


def test_matches_the_definition() -> None:
    x = torch.randn(24, 8, generator=torch.Generator().manual_seed(0)) * 3
    assert float(koleo_loss(x)) == pytest.approx(brute_force(x), rel=1e-5)


def test_spreading_lowers_it() -> None:
    # Features bunched together have close neighbours: a higher loss than spread ones.
    g = torch.Generator().manual_seed(1)
    bunched = torch.tensor([1.0, 0, 0, 0]) + 0.05 * torch.randn(32, 4, generator=g)
    spread = torch.randn(32, 4, generator=g)
    assert float(koleo_loss(bunched)) > float(koleo_loss(spread)) + 1.0


def test_duplicates_give_a_finite_loss_and_finite_gradients() -> None:
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    x = torch.cat([x, x[:2], x[:1]]).requires_grad_(True)  # rows 0 and 1 repeated, row 0 twice
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # Each duplicate's nearest neighbour is its copy at distance 0, counted as eps.
    assert float(loss.detach()) > 0.5 * -math.log(1e-8) - 1


def test_a_batch_of_one_gives_zero_and_a_zero_gradient() -> None:
    x = torch.randn(1, 4, requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert float(loss) == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_bfloat16_features_are_computed_in_float32() -> None:
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    low = koleo_loss(x.bfloat16())
    assert low.dtype == torch.float32
    assert float(low) == pytest.approx(float(koleo_loss(x)), rel=2e-2)


def _two_ranks(rank: int, world: int, x: torch.Tensor) -> dict:
    local = x.chunk(world)[rank].clone().requires_grad_(True)
    loss = koleo_loss(local, dist.group.WORLD)
    loss.backward()
    return {"loss": float(loss), "grad": local.grad}


def test_over_the_global_batch_neighbours_come_from_every_rank() -> None:
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(4))
    results = run_distributed(_two_ranks, 2, x)
    whole = x.clone().requires_grad_(True)
    loss = koleo_loss(whole)
    loss.backward()
    # The mean over ranks of the per-rank means is the global mean; each rank's gradient is its
    # rows' share of the global loss's gradient, scaled by world size (its own mean has 1/8, not
    # 1/16) and summed with what the other rank's loss sends back through the gather.
    assert sum(r["loss"] for r in results) / 2 == pytest.approx(float(loss), rel=1e-5)
    grads = torch.cat([r["grad"] for r in results])
    torch.testing.assert_close(grads / 2, whole.grad, rtol=1e-4, atol=1e-6)
