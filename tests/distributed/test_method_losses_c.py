"""Barlow Twins and VICReg are global-batch losses (world size 2 x B equals world size 1 x 2B in
values and gradients), distributed k-means equals k-means on the concatenated data, and per-rank
state (SwAV's queue, DeepCluster-v2's memory bank) survives DDP, all with real gloo processes.

One pair of processes runs every distributed part (process start-up dominates their cost)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from sslframe.distributed.env import DistEnv
from sslframe.distributed.parallelize import parallelize
from sslframe.losses.barlow import barlow_twins_loss
from sslframe.losses.kmeans import init_centroids, spherical_kmeans
from sslframe.losses.vicreg import vicreg_loss
from sslframe.methods import StepContext, build_method
from sslframe.methods.deepclusterv2 import DeepClusterV2Config
from sslframe.methods.swav import SwAVConfig
from sslframe.models.heads import MLPHeadConfig
from sslframe.models.trunks.resnet import ResNetConfig
from tests.distributed.harness import run_distributed
from tests.losses.test_kmeans import K, clustered_points

N, D, WORLD = 8, 6, 2
# float64 throughout: the only differences left are summation order, far below these tolerances.
RTOL, ATOL = 1e-9, 1e-12


def two_views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64)
    return z1, 0.5 * z1 + torch.randn(N, D, generator=g, dtype=torch.float64)


def loss(name: str, z1: torch.Tensor, z2: torch.Tensor, group: Any) -> torch.Tensor:
    if name == "barlow":
        return barlow_twins_loss(z1, z2, 0.0051, group)
    # Small scale so the variance hinge is active and its gradient is part of the check.
    return vicreg_loss(0.3 * z1, 0.3 * z2, 25.0, 25.0, 1.0, group=group)[0]


def loss_and_grads(z1: torch.Tensor, z2: torch.Tensor, group: Any) -> dict[str, tuple]:
    out = {}
    for name in ("barlow", "vicreg"):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        value = loss(name, a, b, group)
        value.backward()
        out[name] = (value.detach(), a.grad, b.grad)
    return out


def tiny_cfg(method: Any) -> Any:
    """A tiny training config built from the schemas (composing with Hydra in every spawned
    process would cost more than the steps)."""
    trunk = ResNetConfig(arch="resnet18", width_multiplier=0.125, small_images=True)
    head = MLPHeadConfig(hidden_dims=[32], output_dim=16)
    return OmegaConf.create(
        {
            "trunk": OmegaConf.structured(trunk),
            "head": OmegaConf.structured(head),
            "method": OmegaConf.structured(method),
            "model": {"sync_bn": False},
            "trainer": {"compile": False, "precision": "fp32", "channels_last": False},
            "distributed": {"strategy": "ddp", "activation_checkpointing": False},
        }
    )


def swav_queues_under_ddp(rank: int, world: int) -> list[torch.Tensor]:
    """Two SwAV steps under DDP with a queue of two batches per rank; the queue after each step."""
    cfg = tiny_cfg(SwAVConfig(num_prototypes=[10], queue_length=32, queue_start_epoch=0, freeze_prototypes_steps=1))
    torch.manual_seed(0)
    method = build_method(cfg)
    method.set_process_group(dist.group.WORLD)
    model = parallelize(method, cfg, DistEnv(rank=rank, world_size=world), torch.device("cpu"))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    queues = []
    for step in range(2):
        crops = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
        crops += [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)]
        ctx = StepContext(step, 0, 10, 10)
        model(crops, ctx).loss.backward()
        method.before_optimizer_step(ctx)
        optimizer.step()
        optimizer.zero_grad()
        method.after_optimizer_step(ctx)
        queues.append(method.queue.clone())
    return queues


def deepcluster_under_ddp(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Two epochs of DeepCluster-v2 on 32 samples split over the ranks; the shared table after."""
    cfg = tiny_cfg(DeepClusterV2Config(num_prototypes=[4, 3], kmeans_iterations=3))
    torch.manual_seed(0)
    method = build_method(cfg)
    method.set_process_group(dist.group.WORLD)
    method.bind_dataset(32, rank, world)
    model = parallelize(method, cfg, DistEnv(rank=rank, world_size=world), torch.device("cpu"))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(200 + rank)
    for epoch in range(2):
        # This rank's 16 of the 32 samples, in a different order each epoch.
        order = rank * 16 + torch.randperm(16, generator=g)
        for i in range(2):
            ctx = StepContext(epoch * 2 + i, epoch, 2, 4, order[i * 8 : (i + 1) * 8])
            crops = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
            model(crops, ctx).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            method.after_optimizer_step(ctx)  # writes the step's projections into the bank
    return {"assignments": method.assignments.clone(), "bank_index": method.bank_index.clone()}


def everything(rank: int, world: int) -> dict[str, Any]:
    group = dist.group.WORLD
    z1, z2 = two_views()
    rows = slice(rank * N // world, (rank + 1) * N // world)
    out: dict[str, Any] = {"losses": loss_and_grads(z1[rows], z2[rows], group)}
    x, _ = clustered_points()
    share = x[rank * len(x) // world : (rank + 1) * len(x) // world]
    out["kmeans"] = spherical_kmeans(share, x[:K], 5, group)
    out["init"] = init_centroids(share, K, torch.Generator().manual_seed(rank), group)
    out["swav_queues"] = swav_queues_under_ddp(rank, world)
    out["deepcluster"] = deepcluster_under_ddp(rank, world)
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_distributed(everything, WORLD)


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_loss_and_gradients_are_global(ranks: list[dict[str, Any]], name: str) -> None:
    full = loss_and_grads(*two_views(), None)[name]
    per_rank = [r["losses"][name] for r in ranks]
    # The global loss is the mean of the ranks' losses; each rank's gradient averaged over the
    # ranks (as DDP does) is the gradient of the global loss.
    torch.testing.assert_close(sum(r[0] for r in per_rank) / WORLD, full[0], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.cat([r[1] for r in per_rank]) / WORLD, full[1], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(torch.cat([r[2] for r in per_rank]) / WORLD, full[2], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_local_batch_statistics_would_differ(name: str) -> None:
    # Guard against a test that cannot fail: the loss of half the batch alone is another value.
    z1, z2 = two_views()
    half = loss(name, z1[: N // 2], z2[: N // 2], None)
    assert not torch.isclose(half, loss(name, z1, z2, None))


def test_distributed_kmeans_equals_kmeans_on_the_concatenated_data(ranks: list[dict[str, Any]]) -> None:
    x, _ = clustered_points()
    centroids, assignments = spherical_kmeans(x, x[:K], 5)
    for r in ranks:
        torch.testing.assert_close(r["kmeans"][0], centroids)
    assert torch.equal(torch.cat([r["kmeans"][1] for r in ranks]), assignments)
    # Initial centroids come from the first rank and are the same everywhere.
    assert torch.equal(ranks[0]["init"], ranks[1]["init"])


def test_swav_queue_stays_per_rank_under_ddp(ranks: list[dict[str, Any]]) -> None:
    # Each push puts the batch's 8 projections in front; after two steps a rank's older half
    # must be its own first batch. DDP broadcasting rank 0's buffers would overwrite it.
    for r in ranks:
        first, second = r["swav_queues"]
        assert torch.equal(second[:, 8:16], first[:, 0:8])
    assert not torch.allclose(ranks[0]["swav_queues"][1], ranks[1]["swav_queues"][1])


def test_deepcluster_table_is_shared_and_banks_are_per_rank(ranks: list[dict[str, Any]]) -> None:
    tables = [r["deepcluster"]["assignments"] for r in ranks]
    assert torch.equal(tables[0], tables[1]), "the assignment table is the same on every rank"
    assert bool((tables[0] >= 0).all()), "every sample seen in the first epoch has a cluster"
    # Each bank holds this rank's samples only.
    assert sorted(ranks[0]["deepcluster"]["bank_index"].tolist()) == list(range(16))
    assert sorted(ranks[1]["deepcluster"]["bank_index"].tolist()) == list(range(16, 32))
