"""Sinkhorn-Knopp: the marginals the algorithm promises, and agreement with a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslframe.losses.sinkhorn import sinkhorn_knopp


def reference_sinkhorn(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """SwAV's Algorithm (Caron et al. 2020, section 3.1 / appendix A.1), written independently in
    float64: Q = exp(S^T / eps) / sum; alternately divide rows by K * row sums and columns by
    B * column sums; return B * Q^T."""
    q = np.exp(scores.T.astype(np.float64) / epsilon)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_matches_reference(iterations: int) -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, (32, 12)).astype(np.float32)
    ours = sinkhorn_knopp(torch.from_numpy(scores), 0.05, iterations).double().numpy()
    np.testing.assert_allclose(ours, reference_sinkhorn(scores, 0.05, iterations), rtol=1e-4, atol=1e-6)


def test_each_sample_gets_a_distribution() -> None:
    scores = torch.randn(64, 20)
    q = sinkhorn_knopp(scores, 0.05, 3)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))


def test_prototypes_are_used_equally_after_enough_iterations() -> None:
    # The equipartition constraint: each of K prototypes receives B / K of the batch's mass.
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(128, 16), dim=1)
    q = sinkhorn_knopp(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((16,), 128 / 16), rtol=1e-3, atol=1e-3)


def test_large_scores_do_not_overflow() -> None:
    q = sinkhorn_knopp(torch.full((8, 4), 80.0) + torch.randn(8, 4), epsilon=0.05, iterations=3)
    assert torch.isfinite(q).all()
