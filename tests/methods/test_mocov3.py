"""MoCo v3: momentum schedule and EMA, the frozen patch projection, a short run; at world size 2 (real
gloo processes) its loss equals the whole batch's, and FSDP-sharded ViT blocks train like one process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from sslframe.distributed.parallelize import apply_fsdp
from sslframe.losses.mocov3 import mocov3_contrastive_loss
from sslframe.methods import StepContext
from sslframe.methods.mocov3 import MoCoV3, MoCoV3Config
from sslframe.models.heads import MLPHeadConfig
from sslframe.optim.build import parameter_groups
from tests.distributed.harness import run_distributed
from tests.methods.vit_runs import assert_learns_without_collapse, generated_images, short_run, tiny_vit


def tiny_mocov3(batch_norm: bool = True, **method: object) -> MoCoV3:
    head = OmegaConf.structured(
        MLPHeadConfig(hidden_dims=[64, 64], output_dim=16, batch_norm=batch_norm, last_batch_norm=batch_norm)
    )
    cfg = OmegaConf.structured(MoCoV3Config(predictor_hidden_dim=64, predictor_last_batch_norm=batch_norm, **method))
    return MoCoV3(tiny_vit(), head, cfg)


def test_momentum_follows_the_cosine_schedule_and_updates_the_momentum_encoder() -> None:
    torch.manual_seed(0)
    method = tiny_mocov3(momentum=0.99)
    total = 10
    for step in (0, 3, 5, 10):
        # BYOL's schedule as MoCo v3 uses it: m = 1 - (1 - m0) (cos(pi k / K) + 1) / 2.
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2
        assert math.isclose(method.momentum(step, total), expected, rel_tol=1e-12)
    online = method.trunk.blocks()[0].attn.qkv.weight
    target = method.momentum_trunk.blocks()[0].attn.qkv.weight
    with torch.no_grad():
        online.add_(1.0)
    before, now = target.detach().clone(), online.detach().clone()
    method.after_optimizer_step(StepContext(3, 0, total, total))
    m = 1 - (1 - 0.99) * (math.cos(math.pi * 3 / total) + 1) / 2
    torch.testing.assert_close(target, m * before + (1 - m) * now)


def test_frozen_patch_projection_and_momentum_encoder_get_no_updates() -> None:
    method = tiny_mocov3(freeze_patch_embed=True)
    trained = {id(p) for g in parameter_groups(method, 0.1, True) for p in g["params"]}
    assert id(method.trunk.patch_embed.weight) not in trained
    assert not any(id(p) in trained for p in method.momentum_trunk.parameters())
    assert not any(id(p) in trained for p in method.momentum_head.parameters())
    assert id(method.predictor.layers[0].weight) in trained


def test_short_run_learns_without_collapse() -> None:
    torch.manual_seed(0)
    assert_learns_without_collapse(short_run(tiny_mocov3(freeze_patch_embed=True), steps=20, lr=2e-3))


def _one_step(method: MoCoV3, crops: list[torch.Tensor]) -> float:
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    ctx = StepContext(0, 0, 4, 4)
    # Called as the Trainer calls it: FSDP's root unit gathers its parameters in forward.
    loss = method(crops, ctx).loss
    loss.backward()
    optimizer.step()
    method.after_optimizer_step(ctx)
    return float(loss.detach())


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def _watched(method: MoCoV3) -> list[torch.Tensor]:
    return [
        _full(method.trunk.blocks()[1].mlp.fc1.weight),
        _full(method.head.layers[0].weight),
        _full(method.momentum_trunk.blocks()[1].mlp.fc1.weight),
    ]


def loss_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64)


def _loss_rank(rank: int, world: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    q_all, k_all = loss_inputs()
    rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
    q = q_all[rows].clone().requires_grad_()
    k = k_all[rows].clone().requires_grad_()
    loss = mocov3_contrastive_loss(q, k, 0.2, group=dist.group.WORLD)
    loss.backward()
    return float(loss.detach()), q.grad, k.grad


def _fsdp_rank(rank: int, world: int, crops: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(0)
    method = tiny_mocov3(batch_norm=False)
    method.set_process_group(dist.group.WORLD)
    apply_fsdp(method, "fp32", reshard_after_forward=True)
    half = crops[0].shape[0] // world
    loss = _one_step(method, [c[rank * half : (rank + 1) * half] for c in crops])
    return loss, _watched(method)


def _both_checks(rank: int, world: int, crops: list[torch.Tensor]) -> dict:
    return {"loss": _loss_rank(rank, world), "fsdp": _fsdp_rank(rank, world, crops)}


def fsdp_crops() -> list[torch.Tensor]:
    images = generated_images(8)
    return [images, images.flip(-1)]


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    """Both world-size-2 checks in one launch of two gloo processes (process start dominates)."""
    return run_distributed(_both_checks, 2, fsdp_crops())


def test_loss_and_gradients_are_global(two_ranks: list[dict]) -> None:
    q, k = (t.clone().requires_grad_() for t in loss_inputs())
    full = mocov3_contrastive_loss(q, k, 0.2)
    full.backward()
    ranks = [r["loss"] for r in two_ranks]
    # Mean of the ranks' losses = loss of the whole batch; rank gradients averaged as DDP does.
    assert math.isclose(sum(r[0] for r in ranks) / 2, float(full.detach()), rel_tol=1e-12)
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]) / 2, q.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.cat([r[2] for r in ranks]) / 2, k.grad, rtol=1e-9, atol=1e-12)
    # Guard: negatives from the local half only give another loss.
    local = mocov3_contrastive_loss(q[:4].detach(), k[:4].detach(), 0.2)
    assert not math.isclose(float(local), ranks[0][0], rel_tol=1e-6)


def test_fsdp_sharded_vit_at_world_size_2_equals_one_process_on_the_whole_batch(two_ranks: list[dict]) -> None:
    # Without batch norm every term is per sample, so 2 ranks x 4 images equal 1 rank x 8 images:
    # loss, weights after one SGD step (FSDP-sharded ViT blocks and head) and the EMA encoder.
    torch.manual_seed(0)
    single = tiny_mocov3(batch_norm=False)
    initial = _watched(single)
    loss = _one_step(single, fsdp_crops())
    ranks = [r["fsdp"] for r in two_ranks]
    assert math.isclose(sum(r[0] for r in ranks) / 2, loss, rel_tol=1e-5)
    for _, weights in ranks:
        for got, want, start in zip(weights, _watched(single), initial, strict=True):
            assert not torch.allclose(want, start)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
