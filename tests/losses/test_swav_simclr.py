"""SwAV and SimCLR loss values against independent computations from the papers' equations."""

from __future__ import annotations

import math

import numpy as np
import torch

from sslframe.losses.ntxent import nt_xent_loss
from sslframe.losses.swav import swapped_prediction_loss


def test_swapped_prediction_matches_equation() -> None:
    # SwAV eq. 1-2: l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k), p_t = softmax(z_t^T c / tau),
    # averaged over every (assigned crop s, other crop t) pair and the batch.
    rng = np.random.default_rng(1)
    crops, batch, k, tau = 4, 5, 6, 0.1
    scores = rng.normal(size=(crops * batch, k))
    codes = {i: rng.dirichlet(np.ones(k), size=batch) for i in (0, 1)}
    expected, terms = 0.0, 0
    for s, q in codes.items():
        for t in range(crops):
            if t == s:
                continue
            for n in range(batch):
                logits = scores[t * batch + n] / tau
                log_p = logits - math.log(np.exp(logits).sum())
                expected += -(q[n] * log_p).sum() / batch
            terms += 1
    expected /= terms
    ours = swapped_prediction_loss(
        torch.tensor(scores, dtype=torch.float64),
        {s: torch.tensor(q, dtype=torch.float64) for s, q in codes.items()},
        crops,
        tau,
    )
    assert math.isclose(float(ours), expected, rel_tol=1e-6)


def reference_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR eq. 1: l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau),
    averaged over all 2N anchors, with cosine similarity."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = np.array([z[i] @ z[k] / tau for k in range(2 * n)])
        denominator = sum(math.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -(sims[j] - math.log(denominator))
    return total / (2 * n)


def test_nt_xent_matches_equation() -> None:
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    for tau in (0.1, 0.5):
        ours = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), tau)
        assert math.isclose(float(ours), reference_nt_xent(z1, z2, tau), rel_tol=1e-5)


def test_nt_xent_is_low_for_aligned_views_and_gradients_flow() -> None:
    z = torch.randn(16, 32, requires_grad=True)
    aligned = nt_xent_loss(z, z + 0.01 * torch.randn(16, 32), 0.1)
    shuffled = nt_xent_loss(z, torch.randn(16, 32), 0.1)
    assert aligned < shuffled
    aligned.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
