"""MoCo v3, MAE and I-JEPA losses against independent computations written from the papers'
equations (MoCo v3's global-batch semantics are tested with its method, in one gloo launch)."""

from __future__ import annotations

import math

import torch

from sslframe.losses.masked import latent_prediction_loss, masked_patch_loss
from sslframe.losses.mocov3 import mocov3_contrastive_loss

N, D = 8, 6


def pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(N, D, generator=g, dtype=torch.float64)


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_mocov3_loss_matches_algorithm_1() -> None:
    # Chen, Xie, He 2021, Algorithm 1: ctr(q, k) = CE(q k^T / tau, arange(N)) * 2 tau on unit vectors.
    q, k = pairs()
    tau = 0.2
    qs, ks = [unit(r) for r in q.tolist()], [unit(r) for r in k.tolist()]
    terms = []
    for i, qi in enumerate(qs):
        logits = [sum(a * b for a, b in zip(qi, kj, strict=True)) / tau for kj in ks]
        terms.append(-logits[i] + math.log(sum(math.exp(x) for x in logits)))
    expected = 2 * tau * sum(terms) / len(terms)
    assert math.isclose(float(mocov3_contrastive_loss(q, k, tau)), expected, rel_tol=1e-12)


def test_mocov3_loss_rewards_matching_keys() -> None:
    q, k = pairs()
    assert mocov3_contrastive_loss(q, q + 0.01 * k, 0.2) < mocov3_contrastive_loss(q, k, 0.2)


def test_mae_loss_matches_section_3() -> None:
    # He et al. 2022 sec. 3: per-patch normalised pixels (mean and std of the patch), MSE per
    # patch, averaged over the masked patches only.
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    patches = torch.rand(2, 5, 12, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float64)
    for normalize in (True, False):
        total, count = 0.0, 0
        for b in range(2):
            for n in range(5):
                if not mask[b, n]:
                    continue
                pixels = patches[b, n].tolist()
                if normalize:
                    m = sum(pixels) / len(pixels)
                    var = sum((x - m) ** 2 for x in pixels) / (len(pixels) - 1)
                    pixels = [(x - m) / math.sqrt(var + 1e-6) for x in pixels]
                total += sum((p - t) ** 2 for p, t in zip(pred[b, n].tolist(), pixels, strict=True)) / len(pixels)
                count += 1
        assert math.isclose(float(masked_patch_loss(pred, patches, mask, normalize)), total / count, rel_tol=1e-12)


def test_mae_loss_ignores_visible_patches() -> None:
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(1, 4, 12, generator=g, dtype=torch.float64).requires_grad_()
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    masked_patch_loss(pred, torch.rand(1, 4, 12, generator=g, dtype=torch.float64), mask).backward()
    assert pred.grad[0, 1].abs().sum() == 0 and pred.grad[0, 2].abs().sum() == 0
    assert pred.grad[0, 0].abs().sum() > 0 and pred.grad[0, 3].abs().sum() > 0


def test_latent_prediction_losses() -> None:
    # Assran et al. 2023 eq. 1: squared L2 distance per target patch, averaged over patches and
    # blocks; smooth L1 as in the authors' code: 0.5 x^2 for |x| < 1, |x| - 0.5 beyond.
    g = torch.Generator().manual_seed(3)
    pred = 2 * torch.randn(4, 2, 3, 5, generator=g, dtype=torch.float64)
    target = torch.randn(4, 2, 3, 5, generator=g, dtype=torch.float64)
    diffs = (pred - target).reshape(-1, 5).tolist()
    l2 = sum(sum(x * x for x in row) for row in diffs) / len(diffs)
    assert math.isclose(float(latent_prediction_loss(pred, target, "l2")), l2, rel_tol=1e-12)
    flat = [x for row in diffs for x in row]
    smooth = sum(0.5 * x * x if abs(x) < 1 else abs(x) - 0.5 for x in flat) / len(flat)
    assert math.isclose(float(latent_prediction_loss(pred, target, "smooth_l1")), smooth, rel_tol=1e-12)
