"""The benchmark compares like with like: lightly's side (bench/peers.py) and ours compute the
same losses on identical inputs (equal FLOPs per step are recorded by every benchmark run), and
repeats are timed interleaved."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightly", reason="lightly is an optional benchmark dependency (pip install --no-deps lightly)")

from bench import peers
from bench.timing import interleaved_step_times
from sslframe.losses.ntxent import nt_xent_loss
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import swapped_prediction_loss


def test_simclr_losses_and_gradients_agree() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(12, 16, requires_grad=True)
    z2 = torch.randn(12, 16, requires_grad=True)
    ours = nt_xent_loss(z1, z2, temperature=0.1)
    (ours_grad,) = torch.autograd.grad(ours, z1)
    theirs = peers.simclr_loss(0.1)(z1, z2)
    (theirs_grad,) = torch.autograd.grad(theirs, z1)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)


def test_swav_losses_agree_on_the_same_prototype_scores() -> None:
    # 2 global + 4 local crops; codes from the two global crops (crops_for_assign = [0, 1]).
    torch.manual_seed(0)
    batch, num_crops, prototypes = 10, 6, 7
    scores = torch.randn(num_crops * batch, prototypes)
    per_crop = list(scores.split(batch))
    codes = {i: sinkhorn_knopp(per_crop[i], epsilon=0.05, iterations=3) for i in (0, 1)}
    ours = swapped_prediction_loss(scores, codes, num_crops, temperature=0.1)
    theirs = peers.swav_loss(0.1, 0.05, 3)(per_crop[:2], per_crop[2:])
    torch.testing.assert_close(ours, theirs.reshape(()))


def test_repeats_are_interleaved_after_warmup() -> None:
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    order: list[str] = []
    times = interleaved_step_times(
        steps, repeats=3, steps_per_repeat=2, warmup=1, device=torch.device("cpu"), order_log=order
    )
    assert calls[:3] == ["a", "b", "c"]  # one warm-up step each, untimed
    assert order == ["a", "b", "c"] * 3
    assert calls[3:] == [n for n in order for _ in range(2)]
    assert {name: len(v) for name, v in times.items()} == {"a": 3, "b": 3, "c": 3}
