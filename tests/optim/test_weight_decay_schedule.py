"""The cosine weight-decay schedule (DINO, I-JEPA) and how it reaches the optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from sslframe.config.schema import OptimConfig, ScheduleConfig
from sslframe.optim.build import build_optimizer, build_weight_decay_schedule, set_weight_decay


@pytest.mark.parametrize("step", [0, 1, 50, 99, 198, 199])
def test_weight_decay_follows_the_cosine_formula(step: int) -> None:
    # wd_k = final + (base - final) (1 + cos(pi k / (K - 1))) / 2: base at the first step, final
    # at the last (Caron et al. 2021 sec. 4.1: 0.04 to 0.4).
    schedule = build_weight_decay_schedule(
        OmegaConf.structured(OptimConfig(weight_decay=0.04)),
        OmegaConf.structured(ScheduleConfig(final_weight_decay=0.4)),
        total_steps=200,
    )
    assert schedule is not None and len(schedule) == 200
    expected = 0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * step / 199)) / 2
    assert schedule[step] == pytest.approx(expected, rel=1e-12)


def test_no_final_weight_decay_means_constant() -> None:
    optim = OmegaConf.structured(OptimConfig(weight_decay=0.05))
    assert build_weight_decay_schedule(optim, OmegaConf.structured(ScheduleConfig()), 10) is None


def test_scheduled_decay_reaches_weights_but_not_biases() -> None:
    # AdamW decouples decay: with a zero gradient one step scales a weight by (1 - lr * wd)
    # (Loshchilov & Hutter 2019, algorithm 2) and leaves excluded biases unchanged.
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, OmegaConf.structured(OptimConfig(name="adamw", weight_decay=0.04)), lr=0.1)
    set_weight_decay(opt, 0.4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.4, 0.0]
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model.weight.detach(), weight * (1 - 0.1 * 0.4))
    torch.testing.assert_close(model.bias.detach(), bias)
