"""Barlow Twins and VICReg losses against computations written here from the papers' equations."""

from __future__ import annotations

import math

import torch

from sslframe.losses.barlow import barlow_twins_loss, cross_correlation
from sslframe.losses.vicreg import vicreg_loss

N, D = 12, 5


def views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64) * 2 + 1
    z2 = 0.7 * z1 + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return z1, z2


def pearson_matrix(a: torch.Tensor, b: torch.Tensor) -> list[list[float]]:
    """Zbontar et al. 2021, eq. 2: C_ij = sum_b a_bi b_bj / (sqrt(sum_b a_bi^2) sqrt(sum_b b_bj^2)),
    ``a`` and ``b`` mean-centred over the batch, written with scalar loops."""
    n, d = a.shape
    a = a.tolist()
    b = b.tolist()
    mean_a = [sum(a[k][i] for k in range(n)) / n for i in range(d)]
    mean_b = [sum(b[k][j] for k in range(n)) / n for j in range(d)]
    ca = [[a[k][i] - mean_a[i] for i in range(d)] for k in range(n)]
    cb = [[b[k][j] - mean_b[j] for j in range(d)] for k in range(n)]
    c = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(d):
            num = sum(ca[k][i] * cb[k][j] for k in range(n))
            den = math.sqrt(sum(ca[k][i] ** 2 for k in range(n))) * math.sqrt(sum(cb[k][j] ** 2 for k in range(n)))
            c[i][j] = num / den
    return c


def barlow_views() -> tuple[torch.Tensor, torch.Tensor]:
    # Scaled so that batch norm's epsilon (1e-5, added to variances of about 1e4 here) changes the
    # correlations by ~5e-10 relative: far below the tolerances, which then test the formula.
    z1, z2 = views()
    return 100 * z1, 100 * z2


def test_cross_correlation_is_the_pearson_matrix_of_eq_2() -> None:
    z1, z2 = barlow_views()
    expected = torch.tensor(pearson_matrix(z1, z2), dtype=torch.float64)
    torch.testing.assert_close(cross_correlation(z1, z2), expected, rtol=0, atol=1e-8)


def test_barlow_twins_loss_is_eq_1() -> None:
    z1, z2 = barlow_views()
    c = pearson_matrix(z1, z2)
    lam = 0.0051
    on_diag = sum((1 - c[i][i]) ** 2 for i in range(D))
    off_diag = sum(c[i][j] ** 2 for i in range(D) for j in range(D) if i != j)
    expected = torch.tensor(on_diag + lam * off_diag, dtype=torch.float64)
    torch.testing.assert_close(barlow_twins_loss(z1, z2, lam), expected, rtol=1e-8, atol=0)


def test_barlow_twins_loss_is_zero_for_identical_decorrelated_views() -> None:
    # Columns of an orthogonal matrix with the constant direction removed: zero mean, pairwise
    # uncorrelated, so C = I and eq. 1 is zero; the opposite view gives C = -I and 4 per dimension.
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    centred = q - q.mean(dim=0)
    z, _ = torch.linalg.qr(centred[:, :D])
    z = 100 * z  # variances ~1e4 / N: the epsilon leaves (1 - C_ii)^2 below 1e-12
    torch.testing.assert_close(barlow_twins_loss(z, z), torch.zeros((), dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(barlow_twins_loss(z, -z), torch.tensor(4.0 * D, dtype=torch.float64), rtol=1e-5, atol=0)


def vicreg_by_hand(z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float) -> float:
    """Bardes et al. 2022: s = mean squared difference (Algorithm 1's mse_loss), v = eq. 1 with
    gamma 1 and eps 1e-4 (unbiased variance), c = eq. 4 with the covariance of eq. 3; eq. 6 with
    the two views' variance terms averaged, as the authors' main_vicreg.py does
    (``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2``)."""
    n, d = z1.shape

    def variance(z: list[list[float]]) -> float:
        total = 0.0
        for j in range(d):
            mean = sum(z[k][j] for k in range(n)) / n
            var = sum((z[k][j] - mean) ** 2 for k in range(n)) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return total / d

    def covariance(z: list[list[float]]) -> float:
        means = [sum(z[k][j] for k in range(n)) / n for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((z[k][i] - means[i]) * (z[k][j] - means[j]) for k in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    a, b = z1.tolist(), z2.tolist()
    invariance = sum((a[k][j] - b[k][j]) ** 2 for k in range(n) for j in range(d)) / (n * d)
    return lam * invariance + mu * (variance(a) + variance(b)) / 2 + nu * (covariance(a) + covariance(b))


def test_vicreg_loss_is_eq_6() -> None:
    z1, z2 = views()
    # Scaled down so some dimensions fall under the variance target and the hinge is active.
    z1, z2 = z1 * 0.4, z2 * 0.4
    loss, terms = vicreg_loss(z1, z2, 25.0, 25.0, 1.0)
    expected = vicreg_by_hand(z1, z2, 25.0, 25.0, 1.0)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)
    assert float(terms["variance"]) > 0, "the fixed inputs must exercise the variance hinge"
    other, _ = vicreg_loss(z1, z2, 1.0, 2.0, 3.0)
    torch.testing.assert_close(other, torch.tensor(vicreg_by_hand(z1, z2, 1.0, 2.0, 3.0), dtype=torch.float64))
