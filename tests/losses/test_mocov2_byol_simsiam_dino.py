"""MoCo v2, BYOL, SimSiam and DINO losses against independent computations of the papers' equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslframe.losses.cosine import byol_regression_loss, negative_cosine_similarity
from sslframe.losses.dino import dino_loss, teacher_temperature, updated_center
from sslframe.losses.moco import enqueue_, moco_infonce_loss


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_moco_infonce_matches_equation() -> None:
    # He et al. 2020, eq. 1: L_q = -log exp(q.k+/t) / (exp(q.k+/t) + sum_i exp(q.k_i/t)), where
    # the k_i are the queued keys; averaged over the queries.
    rng = np.random.default_rng(0)
    q, k, queue = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(7, 8)))
    t = 0.2
    expected = 0.0
    for n in range(5):
        positive = math.exp(q[n] @ k[n] / t)
        negatives = sum(math.exp(q[n] @ key / t) for key in queue)
        expected += -math.log(positive / (positive + negatives)) / 5
    ours = moco_infonce_loss(*(torch.tensor(a) for a in (q, k, queue)), temperature=t)
    assert math.isclose(float(ours), expected, rel_tol=1e-9)


@pytest.mark.parametrize(("pointer", "count"), [(0, 3), (5, 4), (2, 9)])
def test_enqueue_replaces_the_oldest_keys(pointer: int, count: int) -> None:
    # A FIFO of 7 slots written round-robin: key j of the batch lands in slot (pointer + j) mod 7,
    # later keys overwriting earlier ones when the batch is larger than the queue.
    size = 7
    queue = torch.arange(size * 2, dtype=torch.float64).reshape(size, 2)
    keys = 100 + torch.arange(count * 2, dtype=torch.float64).reshape(count, 2)
    expected = [row.clone() for row in queue]
    for j in range(count):
        expected[(pointer + j) % size] = keys[j]
    ptr = torch.tensor(pointer)
    enqueue_(queue, ptr, keys)
    torch.testing.assert_close(queue, torch.stack(expected))
    assert int(ptr) == (pointer + count) % size


def test_byol_loss_is_the_squared_distance_of_normalised_vectors() -> None:
    # Grill et al. 2020, eq. 2: || q/||q|| - z'/||z'|| ||^2, averaged over the batch; no gradient
    # reaches the target projection z'.
    rng = np.random.default_rng(1)
    p, z = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    expected = float(np.mean(np.sum((unit(p) - unit(z)) ** 2, axis=1)))
    pt, zt = torch.tensor(p, requires_grad=True), torch.tensor(z, requires_grad=True)
    loss = byol_regression_loss(pt, zt)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-9)
    loss.backward()
    assert pt.grad is not None and zt.grad is None


def test_simsiam_loss_is_negative_cosine_with_stop_gradient() -> None:
    # Chen & He 2021, eq. 1-3: D(p, z) = -p/||p|| . z/||z||, with z treated as a constant.
    rng = np.random.default_rng(2)
    p, z = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    expected = -float(np.mean([p[i] @ z[i] / np.linalg.norm(p[i]) / np.linalg.norm(z[i]) for i in range(4)]))
    pt, zt = torch.tensor(p, requires_grad=True), torch.tensor(z, requires_grad=True)
    loss = negative_cosine_similarity(pt, zt)
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-9)
    loss.backward()
    assert pt.grad is not None and zt.grad is None


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_dino_loss_matches_equation() -> None:
    # Caron et al. 2021, eq. 3 with centering (sec. 3.1): sum over global crops x of the teacher
    # and crops x' != x of the student of H(P_t(x), P_s(x')), P_t = softmax((g_t - c) / tau_t),
    # P_s = softmax(g_s / tau_s); DINO averages over those pairs and the batch.
    rng = np.random.default_rng(3)
    crops, batch, k = 4, 3, 6
    student, teacher = rng.normal(size=(crops * batch, k)), rng.normal(size=(2 * batch, k))
    center = rng.normal(size=(1, k))
    ts, tt = 0.1, 0.05
    total, pairs = 0.0, 0
    for t in range(2):
        for s in range(crops):
            if s == t:
                continue
            for n in range(batch):
                target = softmax((teacher[t * batch + n] - center[0]) / tt)
                log_p = np.log(softmax(student[s * batch + n] / ts))
                total += -(target * log_p).sum() / batch
            pairs += 1
    ours = dino_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(center), ts, tt, teacher_crops=2)
    assert math.isclose(float(ours), total / pairs, rel_tol=1e-9)


def test_center_update_is_an_ema_of_the_batch_mean() -> None:
    # Caron et al. 2021, eq. 4: c <- m c + (1 - m) (1/B) sum_i g_t(x_i).
    rng = np.random.default_rng(4)
    center, teacher = rng.normal(size=(1, 5)), rng.normal(size=(8, 5))
    expected = 0.9 * center + 0.1 * teacher.mean(axis=0, keepdims=True)
    ours = updated_center(torch.tensor(center), torch.tensor(teacher), momentum=0.9)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("epoch", [0, 1, 15, 29, 30, 100])
def test_teacher_temperature_warms_up_linearly_over_epochs(epoch: int) -> None:
    # Sec. 4.1: linear warmup from 0.04 to 0.07 during the first 30 epochs, one value per epoch
    # (the authors' code takes np.linspace(0.04, 0.07, 30)[epoch]), then 0.07.
    expected = np.linspace(0.04, 0.07, 30)[epoch] if epoch < 30 else 0.07
    assert math.isclose(teacher_temperature(epoch, 0.04, 0.07, 30), expected, rel_tol=1e-12)
