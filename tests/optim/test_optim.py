"""LARS, parameter groups, linear LR scaling and per-iteration schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from sslframe.config.schema import OptimConfig, ScheduleConfig
from sslframe.optim.build import build_optimizer, build_schedule, parameter_groups, scaled_lr, set_lr
from sslframe.optim.lars import LARS


def test_lars_step_matches_the_formula() -> None:
    # You et al. 2017, eq. 6 with momentum: local_lr = eta * ||w|| / (||g|| + wd * ||w||);
    # v = m * v + local_lr * (g + wd * w); w = w - lr * v.
    torch.manual_seed(0)
    w0 = torch.randn(4, 3)
    g = torch.randn(4, 3)
    lr, wd, eta, m = 0.5, 1e-4, 0.001, 0.9
    w = torch.nn.Parameter(w0.clone())
    opt = LARS([{"params": [w], "weight_decay": wd}], lr=lr, momentum=m, trust_coefficient=eta)
    v = torch.zeros_like(w0)
    expected = w0.clone()
    for _ in range(2):
        w.grad = g.clone()
        opt.step()
        local = eta * expected.norm() / (g.norm() + wd * expected.norm())
        v = m * v + local * (g + wd * expected)
        expected = expected - lr * v
    torch.testing.assert_close(w.detach(), expected)


def test_lars_excluded_group_is_plain_momentum_sgd() -> None:
    b = torch.nn.Parameter(torch.ones(3))
    opt = LARS([{"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=0.1, momentum=0.9)
    b.grad = torch.full((3,), 2.0)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.full((3,), 1 - 0.1 * 2.0))


def test_bias_and_norm_parameters_get_no_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2, bias=False))
    groups = parameter_groups(model, weight_decay=0.1, exclude_bias_and_norm=True)
    assert [len(g["params"]) for g in groups] == [2, 3]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"]
    all_in_one = parameter_groups(model, 0.1, exclude_bias_and_norm=False)
    assert len(all_in_one) == 1


def test_bias_lr_factor_scales_the_scheduled_rate() -> None:
    # Barlow Twins (Zbontar et al. 2021, sec. 4): weights at lr 0.2, biases and BN at 0.0048.
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    cfg = OmegaConf.structured(OptimConfig(name="lars", lr=0.2, bias_lr_factor=0.0048 / 0.2))
    opt = build_optimizer(model, cfg, lr=0.2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.0048])
    set_lr(opt, 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.0024])


def test_linear_scaling_rule() -> None:
    cfg = OmegaConf.structured(OptimConfig(name="lars", lr=4.8, base_batch_size=4096))
    assert scaled_lr(cfg, 256) == pytest.approx(0.3)
    cfg.base_batch_size = 0
    assert scaled_lr(cfg, 256) == 4.8


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_every_optimizer_builds_and_steps(name: str) -> None:
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, OmegaConf.structured(OptimConfig(name=name)), lr=0.05)
    model(torch.randn(4, 3)).sum().backward()
    before = model.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.weight)
    assert all(g["lr"] == 0.05 for g in opt.param_groups)


def test_warmup_cosine_values() -> None:
    cfg = OmegaConf.structured(
        ScheduleConfig(name="cosine", warmup_epochs=1, warmup_start_factor=0.1, final_factor=0.01)
    )
    lrs = build_schedule(cfg, peak_lr=2.0, total_steps=110, steps_per_epoch=10)
    assert len(lrs) == 110
    np.testing.assert_allclose(lrs[:10], np.linspace(0.2, 2.0, 10, endpoint=False))
    assert lrs[10] == pytest.approx(2.0)
    assert lrs[-1] == pytest.approx(0.02)
    # Half-way through the cosine part: final + (peak - final) * (1 + cos(pi/2)) / 2.
    assert lrs[10 + 50] == pytest.approx(0.02 + 0.5 * 1.98 * (1 + math.cos(math.pi * 50 / 99)))
    assert np.all(np.diff(lrs[10:]) <= 0)


def test_constant_schedule() -> None:
    cfg = OmegaConf.structured(ScheduleConfig(name="constant", warmup_steps=4))
    lrs = build_schedule(cfg, peak_lr=1.0, total_steps=10, steps_per_epoch=5)
    np.testing.assert_allclose(lrs, [0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1])


def test_layer_wise_decay_and_patch_embedding_factor() -> None:
    """DINOv2's layer-wise decay (0.9) and patch-embedding factor (0.2): block i of a depth-3 ViT
    learns at 0.9 ** (4 - (i + 1)) of the rate, the tokens and patch embedding at 0.9 ** 4 (the
    embedding times 0.2 more), the final norm and the heads at 1; biases and norms keep their own
    group (no weight decay) at their layer's factor."""
    from sslframe.models.trunks.vit import VisionTransformer

    class WithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = VisionTransformer("vit_tiny", patch_size=4, image_size=16, embed_dim=8, depth=3, num_heads=2)
            self.head = torch.nn.Linear(8, 4)

    model = WithHead()
    groups = parameter_groups(model, 0.05, True, layer_decay=0.9, patch_embed_lr_factor=0.2)
    scale_of = {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())

    def scale(name: str) -> tuple[float, float]:
        return scale_of[id(named[name])]

    assert scale("trunk.blocks_list.0.attn.qkv.weight") == (pytest.approx(0.9**3), 0.05)
    assert scale("trunk.blocks_list.2.mlp.fc1.weight") == (pytest.approx(0.9**1), 0.05)
    assert scale("trunk.blocks_list.2.mlp.fc1.bias") == (pytest.approx(0.9**1), 0.0)
    assert scale("trunk.cls_token") == (pytest.approx(0.9**4), 0.05)
    assert scale("trunk.patch_embed.weight") == (pytest.approx(0.9**4 * 0.2), 0.05)
    assert scale("trunk.norm.weight") == (1.0, 0.0) and scale("head.weight") == (1.0, 0.05)
    # Off, the two groups of before: every weight at 1 with decay, biases and norms at 1 without.
    plain = parameter_groups(model, 0.05, True)
    assert [(g["lr_scale"], g["weight_decay"], g["lars_exclude"]) for g in plain] == [
        (1.0, 0.05, False),
        (1.0, 0.0, True),
    ]
    optimizer = build_optimizer(model, OmegaConf.structured(OptimConfig(name="adamw", layer_decay=0.9)), lr=2.0)
    lrs = sorted({round(g["lr"], 6) for g in optimizer.param_groups})
    assert lrs == sorted({round(2.0 * 0.9**k, 6) for k in range(5)})


class _WithPredictor(torch.nn.Module):
    """A model naming its predictor's parameters as constant-rate ones (as SimSiam does)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        self.predictor = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))

    def constant_lr_prefixes(self) -> tuple[str, ...]:
        return ("predictor.",)


def test_constant_lr_groups_stay_at_the_peak() -> None:
    # SimSiam's --fix-pred-lr (the authors' main_simsiam.py): the predictor's rate is the initial
    # one at every step, the rest follow the schedule; bias and norm splitting still applies.
    model = _WithPredictor()
    cfg = OmegaConf.structured(OptimConfig(name="sgd", lr=0.05, exclude_bias_and_norm=True, weight_decay=1e-4))
    opt = build_optimizer(model, cfg, lr=0.05)
    constant = {id(p) for g in opt.param_groups if g["constant_lr"] for p in g["params"]}
    assert constant == {id(p) for p in model.predictor.parameters()}
    assert [g["weight_decay"] for g in opt.param_groups if g["constant_lr"]] == [1e-4, 0.0]
    assert all(g["lr"] == pytest.approx(0.05) for g in opt.param_groups)
    set_lr(opt, 0.01)
    assert sorted((g["constant_lr"], round(g["lr"], 6)) for g in opt.param_groups) == [
        (False, 0.01),
        (False, 0.01),
        (True, 0.05),
        (True, 0.05),
    ]
    # Without the method's hook (any plain module) nothing is constant.
    assert not any(g["constant_lr"] for g in parameter_groups(model.trunk, 1e-4, True))
