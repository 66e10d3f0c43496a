"""Precise BN (``eval.precise_bn_images``): batch-norm statistics re-estimated on evaluation images.

The reference is computed independently in the test from the definition (Wu & Johnson 2021,
*Rethinking "Batch" in BatchNorm*, sec. 3): each layer normalises every batch with that batch's
own statistics while they are gathered, and its running mean and variance become the averages of
the per-batch mean and unbiased variance of its input over the batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslframe.errors import UserError
from sslframe.eval.features import recalibrate_batch_norm
from tests.distributed.harness import run_distributed
from tests.eval.test_tasks import _eval, pretrained  # noqa: F401  (the module fixture)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU()
    ).eval()


def _batches(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 9, 9, generator=g) * 2 + 1 for _ in range(count)]


def _reference(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch-norm layer: the mean over batches of its input's batch mean and unbiased batch
    variance, each batch normalised by its own statistics on the way (written out with F.conv2d
    and the batch's moments, not through the modules' train mode)."""
    conv1, bn1, _, conv2, _, _ = net
    sums = [[torch.zeros(4), torch.zeros(4)], [torch.zeros(5), torch.zeros(5)]]
    for x in batches:
        h = F.conv2d(x, conv1.weight, conv1.bias)
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)
        sums[0][0] += mean
        sums[0][1] += var
        biased = h.var((0, 2, 3), unbiased=False)
        h = (h - mean[None, :, None, None]) / torch.sqrt(biased[None, :, None, None] + bn1.eps)
        h = torch.relu(h * bn1.weight[None, :, None, None] + bn1.bias[None, :, None, None])
        h = F.conv2d(h, conv2.weight, conv2.bias)
        sums[1][0] += h.mean((0, 2, 3))
        sums[1][1] += h.var((0, 2, 3), unbiased=True)
    return [(m / len(batches), v / len(batches)) for m, v in sums]


def test_running_statistics_become_the_average_batch_statistics_of_the_data() -> None:
    net = _net()
    net[1].momentum, net[4].momentum = 0.1, 0.3
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    batches = _batches(5, seed=1)
    # 36 images: four whole batches, then four images of the fifth (a batch of its own).
    used = recalibrate_batch_norm(net, iter(batches), 36)
    assert used == 36
    expected = _reference(net, [*batches[:4], batches[4][:4]])
    for bn, (mean, var) in zip((net[1], net[4]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    # Weights untouched; momentum and eval mode as they were.
    for key, value in weights.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert (net[1].momentum, net[4].momentum) == (0.1, 0.3)
    assert not any(m.training for m in net.modules())


def test_a_trunk_without_batch_norm_is_refused() -> None:
    with pytest.raises(UserError, match="no batch-norm layers"):
        recalibrate_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), iter(_batches(1, 0)), 8)


def _rank_statistics(rank: int, world: int) -> list[list[float]]:
    """Rank 0 passes two batches, rank 1 one: the result must be the average over all three."""
    net = _net()
    batches = _batches(3, seed=2)
    mine = batches[:2] if rank == 0 else batches[2:]
    assert recalibrate_batch_norm(net, iter(mine), 100) == 8 * len(mine)
    return [t.tolist() for bn in (net[1], net[4]) for t in (bn.running_mean, bn.running_var)]


def test_ranks_average_their_statistics_weighted_by_their_images() -> None:
    net = _net()
    expected = [t.tolist() for pair in _reference(net, _batches(3, seed=2)) for t in pair]
    for result in run_distributed(_rank_statistics, 2):
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_extraction_records_it_and_changes_a_random_init_trunks_features(pretrained: Path) -> None:  # noqa: F811
    from sslframe.eval.store import read_features

    plain = _eval(pretrained, "extract", "eval.random_init=true", f"eval.out_dir={pretrained / 'rand'}")
    precise = _eval(
        pretrained, "extract", "eval.random_init=true", "eval.precise_bn_images=24", f"eval.out_dir={pretrained / 'rp'}"
    )
    assert plain["precise_bn_images"] == 0 and precise["precise_bn_images"] == 24
    a, b = read_features(pretrained / "rand" / "val"), read_features(pretrained / "rp" / "val")
    assert b.meta["precise_bn_images"] == 24
    assert torch.equal(a.indices, b.indices)
    assert not torch.allclose(a.features, b.features, atol=1e-3)
    # The kNN result is named apart from the plain random init's, and says how it was made.
    knn = _eval(pretrained, "knn", "eval.random_init=true", "eval.precise_bn_images=24")
    assert knn["precise_bn_images"] == 24
    assert (pretrained / "run" / "eval" / "knn_random_init_precise_bn.json").exists()


@pytest.mark.parametrize(
    ("task", "extra", "message"),
    [
        ("knn", ["eval.raw_pixels=true"], "has no trunk"),
        ("knn", ["eval.features=somewhere"], "applies when features are computed"),
        ("finetune", [], "fine-tuning trains the batch-norm statistics"),
    ],
)
def test_settings_it_cannot_apply_to_are_refused(pretrained: Path, task: str, extra: list[str], message: str) -> None:  # noqa: F811
    with pytest.raises(UserError, match=message):
        _eval(pretrained, task, "eval.precise_bn_images=8", *extra)


def test_a_negative_count_is_refused(pretrained: Path) -> None:  # noqa: F811
    with pytest.raises(UserError, match="must be 0"):
        _eval(pretrained, "knn", "eval.precise_bn_images=-1")
