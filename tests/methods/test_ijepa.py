"""I-JEPA: the multi-block mask sampler, the linear EMA schedule, the frozen target, a short run."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from sslframe.config import compose_config
from sslframe.errors import UserError
from sslframe.losses.masked import latent_prediction_loss
from sslframe.methods import StepContext
from sslframe.methods.ijepa import IJEPA, BlockMaskSampler, IJEPAConfig
from sslframe.models.heads import MLPHeadConfig
from sslframe.optim.build import parameter_groups
from tests.methods.vit_runs import assert_learns_without_collapse, short_run, tiny_vit

HEAD = OmegaConf.structured(MLPHeadConfig())
GRID = (14, 14)


def tiny_ijepa(**method: object) -> IJEPA:
    cfg = OmegaConf.structured(
        IJEPAConfig(predictor_dim=32, predictor_depth=1, predictor_heads=4, min_context=4, **method)
    )
    return IJEPA(tiny_vit(class_token=False, pool="mean"), HEAD, cfg)


def as_rectangle(indices: torch.Tensor, grid: tuple[int, int]) -> tuple[int, int] | None:
    """(height, width) if the patch indices fill an axis-aligned rectangle, else None."""
    rows, cols = indices // grid[1], indices % grid[1]
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    return (h, w) if h * w == len(indices) == len(set(indices.tolist())) else None


def test_mask_sampler_properties() -> None:
    sampler = BlockMaskSampler()  # the paper's defaults: 4 targets, scale 0.15-0.2, aspect 0.75-1.5
    masks = sampler(8, GRID, torch.Generator().manual_seed(0))
    assert masks.targets.shape[:2] == (4, 8) and masks.context.shape[0] == 8
    area = GRID[0] * GRID[1]
    for b in range(8):
        context = set(masks.context[b].tolist())
        assert len(context) == masks.context.shape[1] >= 10
        for t in range(4):
            target = masks.targets[t, b]
            assert not context & set(target.tolist())  # the context never sees a target patch
            h, w = as_rectangle(target, GRID)
            # Rounding the block sides to whole patches moves scale and aspect a little.
            assert 0.15 * area * 0.75 <= h * w <= 0.2 * area * 1.25
            assert 0.75 / 1.6 <= h / w <= 1.5 * 1.6
    again = sampler(8, GRID, torch.Generator().manual_seed(0))
    assert torch.equal(masks.context, again.context) and torch.equal(masks.targets, again.targets)
    other = sampler(8, GRID, torch.Generator().manual_seed(1))
    assert not torch.equal(masks.targets, other.targets)


def test_context_block_covers_its_scale_before_targets_are_removed() -> None:
    sampler = BlockMaskSampler(num_targets=1, target_scale=(0.0, 0.0), context_scale=(0.85, 1.0))
    masks = sampler(4, GRID, torch.Generator().manual_seed(0))
    # A square context block of 85-100% of the 14x14 grid has side round(sqrt(196 s)) = 13 or 14,
    # so 169 or 196 patches; the single-patch target removes at most one of them.
    kept = masks.context.shape[1]
    assert 168 <= kept <= 196
    for b in range(4):
        assert len(set(masks.context[b].tolist())) == kept


def test_targets_covering_everything_is_a_user_error() -> None:
    sampler = BlockMaskSampler(num_targets=1, target_scale=(1.0, 1.0), target_aspect=(1.0, 1.0))
    with pytest.raises(UserError, match="leave no context patch"):
        sampler(1, (4, 4), torch.Generator().manual_seed(0))


def test_target_momentum_is_linear_and_the_target_follows_the_encoder() -> None:
    torch.manual_seed(0)
    method = tiny_ijepa(momentum=[0.996, 1.0])
    total = 8
    for step in (0, 2, 4, 8):
        # Assran et al. 2023 sec. 4: momentum linear from 0.996 to 1.0 over training.
        assert math.isclose(method.momentum(step, total), 0.996 + 0.004 * step / total, rel_tol=1e-12)
    online = method.trunk.blocks()[0].mlp.fc2.weight
    target = method.target_encoder.blocks()[0].mlp.fc2.weight
    with torch.no_grad():
        online.add_(1.0)
    before, now = target.detach().clone(), online.detach().clone()
    method.after_optimizer_step(StepContext(2, 0, total, total))
    m = 0.996 + 0.004 * 2 / total
    torch.testing.assert_close(target, m * before + (1 - m) * now)


def test_target_encoder_gets_no_gradient() -> None:
    torch.manual_seed(0)
    method = tiny_ijepa()
    out = method.training_step([torch.randn(2, 3, 16, 16)], StepContext(0, 0, 1, 1))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.target_encoder.parameters())
    assert method.trunk.blocks()[0].attn.qkv.weight.grad is not None
    assert method.head.mask_token.grad is not None
    trained = {id(p) for g in parameter_groups(method, 0.05, True) for p in g["params"]}
    assert not any(id(p) in trained for p in method.target_encoder.parameters())


def test_short_run_learns_without_collapse() -> None:
    torch.manual_seed(0)
    assert_learns_without_collapse(short_run(tiny_ijepa(), steps=20, lr=5e-4))


def test_default_loss_is_the_authors_smooth_l1() -> None:
    """The authors' src/train.py (facebookresearch/ijepa) computes ``F.smooth_l1_loss(z, h)``;
    the published numbers come from it, so it is the default (the paper's eq. 1 is a squared L2)."""
    cfg = compose_config("train", ["config=ijepa_vit_huge"])
    assert cfg.method.loss == "smooth_l1"
    pred = torch.tensor([[[[0.0, 3.0]]]])
    target = torch.zeros_like(pred)
    # 0.5 * 0^2 and |3| - 0.5, averaged over the two elements.
    assert float(latent_prediction_loss(pred, target, cfg.method.loss)) == (0.0 + 2.5) / 2
