"""Global-batch losses: world size 2 with batch B equals world size 1 with batch 2B, in values and
gradients, with real gloo processes (docs/architecture.md, principle 2)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from sslframe.losses.ntxent import nt_xent_loss
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import swapped_prediction_loss
from tests.distributed.harness import run_distributed

N, D, K, CROPS = 8, 6, 5, 3
# float64 throughout: the only differences left are summation order, far below these tolerances.
RTOL, ATOL = 1e-9, 1e-12


def simclr_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(N, D, generator=g, dtype=torch.float64)


def _simclr_rank(rank: int, world: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    z1_all, z2_all = simclr_inputs()
    rows = slice(rank * N // world, (rank + 1) * N // world)
    z1 = z1_all[rows].clone().requires_grad_()
    z2 = z2_all[rows].clone().requires_grad_()
    loss = nt_xent_loss(z1, z2, 0.2, group=dist.group.WORLD)
    loss.backward()
    return float(loss.detach()), z1.grad, z2.grad


def test_simclr_loss_and_gradients_are_global() -> None:
    z1, z2 = (t.clone().requires_grad_() for t in simclr_inputs())
    full = nt_xent_loss(z1, z2, 0.2)
    full.backward()
    ranks = run_distributed(_simclr_rank, 2)
    # The global loss is the mean of the ranks' losses (equal local batch sizes); each rank's
    # gradient, averaged over ranks as DDP does, is the gradient of the global loss.
    torch.testing.assert_close(torch.tensor(sum(r[0] for r in ranks) / 2, dtype=torch.float64), full.detach())
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]) / 2, z1.grad, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.cat([r[2] for r in ranks]) / 2, z2.grad, rtol=RTOL, atol=ATOL)


def swav_inputs() -> torch.Tensor:
    # Prototype scores for CROPS crops of N images, crop-major (rows [c*N:(c+1)*N] are crop c).
    return torch.randn(CROPS * N, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def swav_loss(scores: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    batch = scores.shape[0] // CROPS
    codes = {i: sinkhorn_knopp(scores[i * batch : (i + 1) * batch].detach(), 0.05, 3, group) for i in (0, 1)}
    return swapped_prediction_loss(scores, codes, CROPS, 0.1)


def local_rows(rank: int, world: int) -> list[int]:
    b = N // world
    return [c * N + rank * b + i for c in range(CROPS) for i in range(b)]


def _swav_rank(rank: int, world: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    everything = swav_inputs()
    rows = local_rows(rank, world)
    scores = everything[rows].clone().requires_grad_()
    loss = swav_loss(scores, dist.group.WORLD)
    loss.backward()
    b = N // world
    codes = sinkhorn_knopp(scores[:b].detach(), 0.05, 3, dist.group.WORLD)
    return float(loss.detach()), scores.grad, codes


def test_swav_codes_loss_and_gradients_are_global() -> None:
    scores = swav_inputs().requires_grad_()
    full = swav_loss(scores, None)
    full.backward()
    full_codes = sinkhorn_knopp(scores[:N].detach(), 0.05, 3)
    ranks = run_distributed(_swav_rank, 2)
    torch.testing.assert_close(torch.cat([r[2] for r in ranks]), full_codes, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.tensor(sum(r[0] for r in ranks) / 2, dtype=torch.float64), full.detach())
    for rank, (_, grad, _) in enumerate(ranks):
        torch.testing.assert_close(grad / 2, scores.grad[local_rows(rank, 2)], rtol=RTOL, atol=ATOL)


def test_local_codes_differ_from_global_ones() -> None:
    # Guard against a test that cannot fail: Sinkhorn on half the batch gives other codes.
    scores = swav_inputs()
    half = sinkhorn_knopp(scores[: N // 2], 0.05, 3)
    full = sinkhorn_knopp(scores[:N], 0.05, 3)[: N // 2]
    assert not torch.allclose(half, full)
