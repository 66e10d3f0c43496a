"""The benchmark compares like with like: every loss lightly implements that we also have gives the
same value and gradients as ours on identical inputs (NT-Xent, SwAV with Sinkhorn, Barlow Twins,
VICReg, DINO, BYOL's and SimSiam's cosine, MoCo with a memory bank, MAE's masked reconstruction),
or, where our convention differs, the test says which one we follow and why; and repeats are
timed interleaved."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

pytest.importorskip("lightly", reason="lightly is an optional benchmark dependency (pip install --no-deps lightly)")

from bench import peers
from bench.timing import interleaved_step_times
from sslframe.losses.ntxent import nt_xent_loss
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.losses.swav import swapped_prediction_loss


def test_simclr_losses_and_gradients_agree() -> None:
    """NT-Xent over the 2B views: both take the other 2B - 2 views as negatives, both directions."""
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


def values_and_gradients(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``fn(*inputs)`` and its gradients with respect to every input."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves).reshape(())
    return value.detach(), list(torch.autograd.grad(value, leaves, allow_unused=True))


def assert_same(ours: tuple, theirs: tuple) -> None:
    torch.testing.assert_close(ours[0], theirs[0])
    for a, b in zip(ours[1], theirs[1], strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)


def embeddings(*shape: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2)]


def test_swav_losses_and_gradients_agree() -> None:
    """Sinkhorn codes and the swapped prediction of all crop pairs, gradients to every crop's scores."""
    from lightly.loss import SwaVLoss

    batch, crops, prototypes = 10, 6, 7
    scores = torch.randn(crops * batch, prototypes, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def ours(s: torch.Tensor) -> torch.Tensor:
        per_crop = list(s.split(batch))
        codes = {i: sinkhorn_knopp(per_crop[i].detach(), epsilon=0.05, iterations=3) for i in (0, 1)}
        return swapped_prediction_loss(s, codes, crops, temperature=0.1)

    def theirs(s: torch.Tensor) -> torch.Tensor:
        per_crop = list(s.split(batch))
        return SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)(per_crop[:2], per_crop[2:])

    assert_same(values_and_gradients(ours, scores), values_and_gradients(theirs, scores))


def test_barlow_twins_agrees() -> None:
    """Both standardise each dimension with the biased batch variance and batch norm's epsilon."""
    from lightly.loss import BarlowTwinsLoss

    from sslframe.losses.barlow import barlow_twins_loss

    z1, z2 = embeddings(16, 8)
    assert_same(
        values_and_gradients(lambda a, b: barlow_twins_loss(a, b, 0.0051), z1, z2),
        values_and_gradients(lambda a, b: BarlowTwinsLoss(lambda_param=0.0051)(a, b), z1, z2),
    )


def test_vicreg_agrees_with_the_authors_averaged_variance() -> None:
    """lightly averages the two variance hinges (``0.5 * (v_a + v_b)``), as the authors'
    main_vicreg.py does and as ours now does (the paper's eq. 6 sums them)."""
    from lightly.loss import VICRegLoss

    from sslframe.losses.vicreg import vicreg_loss

    z1, z2 = (0.4 * z for z in embeddings(16, 8))  # some dimensions under the variance target
    assert_same(
        values_and_gradients(lambda a, b: vicreg_loss(a, b, 25.0, 25.0, 1.0)[0], z1, z2),
        values_and_gradients(lambda a, b: VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0)(a, b), z1, z2),
    )


def test_dino_loss_agrees_with_a_centre() -> None:
    """Cross-entropy of centred, sharpened teacher outputs against every other student crop."""
    from lightly.loss import DINOLoss

    from sslframe.losses.dino import dino_loss

    batch, crops, dim = 6, 4, 12
    g = torch.Generator().manual_seed(2)
    student = torch.randn(crops * batch, dim, generator=g, dtype=torch.float64)
    teacher = torch.randn(2 * batch, dim, generator=g, dtype=torch.float64)
    center = torch.randn(1, dim, generator=g, dtype=torch.float64)
    criterion = DINOLoss(output_dim=dim, student_temp=0.1).double()
    criterion.center.copy_(center)

    def theirs(s: torch.Tensor) -> torch.Tensor:
        return criterion(list(teacher.split(batch)), list(s.split(batch)), teacher_temp=0.04)

    assert_same(
        values_and_gradients(lambda s: dino_loss(s, teacher, center, 0.1, 0.04, teacher_crops=2), student),
        values_and_gradients(theirs, student),
    )


def test_byol_regression_is_an_affine_map_of_lightlys_negative_cosine() -> None:
    """We follow BYOL's eq. 2 and the authors' code: ||p/|p| - z/|z| ||^2 = 2 - 2 cos; lightly's
    example minimises -cos (SimSiam's form). Same minimiser; our gradient is twice lightly's."""
    from lightly.loss import NegativeCosineSimilarity

    from sslframe.losses.cosine import byol_regression_loss, negative_cosine_similarity

    p, z = embeddings(10, 8)
    ours_value, (ours_grad, _) = values_and_gradients(byol_regression_loss, p, z)
    theirs_value, (theirs_grad, _) = values_and_gradients(lambda a, b: NegativeCosineSimilarity()(a, b.detach()), p, z)
    torch.testing.assert_close(ours_value, 2 + 2 * theirs_value)
    torch.testing.assert_close(ours_grad, 2 * theirs_grad)
    # SimSiam's D(p, z) is lightly's loss exactly.
    assert_same(
        values_and_gradients(negative_cosine_similarity, p, z),
        values_and_gradients(lambda a, b: NegativeCosineSimilarity()(a, b.detach()), p, z),
    )


def test_moco_queue_loss_agrees_with_lightlys_memory_bank() -> None:
    """InfoNCE of each query against its key and a queue of negatives: lightly's NT-Xent with a
    memory bank, whose bank is set to our queue."""
    from lightly.loss import NTXentLoss

    from sslframe.losses.moco import moco_infonce_loss

    q, k = (x.float() for x in embeddings(8, 16))
    queue = torch.nn.functional.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(32, 16))
    criterion.memory_bank.bank = queue.clone()

    def ours(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return moco_infonce_loss(
            torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1), queue, 0.2
        )

    def theirs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return criterion(a, b.detach())

    ours_value, (ours_grad, _) = values_and_gradients(ours, q, k)
    theirs_value, (theirs_grad, _) = values_and_gradients(theirs, q, k)
    torch.testing.assert_close(ours_value, theirs_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-6)


def test_mae_masked_reconstruction_agrees_with_lightlys_example() -> None:
    """lightly's MAE example: MSE between the predictions and the (normalised, with
    ``utils.normalize_mean_var``) pixels of the masked patches only; ours masks by a 0/1 map."""
    from lightly.models import utils

    from sslframe.losses.masked import masked_patch_loss

    g = torch.Generator().manual_seed(4)
    batch, patches, pixels, hidden = 3, 9, 12, 6
    pred = torch.randn(batch, patches, pixels, generator=g, dtype=torch.float64)
    target = torch.randn(batch, patches, pixels, generator=g, dtype=torch.float64)
    idx_mask = torch.stack([torch.randperm(patches, generator=g)[:hidden] for _ in range(batch)])
    mask = torch.zeros(batch, patches, dtype=torch.float64).scatter_(1, idx_mask, 1.0)
    for normalise in (False, True):

        def theirs(p: torch.Tensor, normalise: bool = normalise) -> torch.Tensor:
            t = utils.get_at_index(target, idx_mask)
            t = utils.normalize_mean_var(t, dim=-1) if normalise else t
            return torch.nn.functional.mse_loss(utils.get_at_index(p, idx_mask), t)

        assert_same(
            values_and_gradients(lambda p, normalise=normalise: masked_patch_loss(p, target, mask, normalise), pred),
            values_and_gradients(theirs, pred),
        )


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
