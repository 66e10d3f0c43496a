"""SimCLR's two ways of batching the views through trunk and head, and the learned parameters of
a projection head's output batch norm (the two recipe details where the SimCLR authors' code and
lightly's SimCLR example differ)."""

from __future__ import annotations

import pytest
import torch

from sslframe.config import compose_config
from sslframe.methods import StepContext, build_method
from sslframe.optim.build import parameter_groups
from tests.helpers import TINY

BATCH, SIZE = 8, 16


def tiny_simclr(*extra: str):
    cfg = compose_config("train", ["config=simclr_resnet50", *TINY, "data=folder", "data.path=unused", *extra])
    torch.manual_seed(0)
    return build_method(cfg).train()


def first_view_embeddings(method, second: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return method.training_step([first, second], StepContext(0, 0, 1, 1)).embeddings


def test_views_share_batch_norm_statistics_unless_run_per_view() -> None:
    """``method.view_batches=together`` (the default: the authors' tf2/model.py concatenates the
    views before the ResNet) normalises each batch-norm layer over both views, so the first view's
    embedding changes with the second; ``per_view`` (lightly's example) gives the first view's
    embedding as if it ran alone."""
    g = torch.Generator().manual_seed(0)
    first, second, other = (torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(3))
    together = tiny_simclr()
    assert together.view_batches == "together"
    a = first_view_embeddings(together, second, first)
    b = first_view_embeddings(together, other, first)
    assert (a - b).abs().max() > 1e-3

    per_view = tiny_simclr("method.view_batches=per_view")
    a = first_view_embeddings(per_view, second, first)
    b = first_view_embeddings(per_view, other, first)
    with torch.no_grad():
        alone = torch.nn.functional.normalize(per_view.head(per_view.trunk(first)), dim=1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, alone)


@pytest.mark.parametrize(
    ("params", "scale", "shift"), [("none", False, False), ("scale", True, False), ("scale_shift", True, True)]
)
def test_output_batch_norm_learns_the_parameters_asked_for(params: str, scale: bool, shift: bool) -> None:
    """``head.last_batch_norm_params``: ``none`` has no learned parameters (MoCo v3's and
    SimSiam's output batch norm), ``scale`` a learned scale and a shift held at zero (the SimCLR
    authors' ``center=False``), ``scale_shift`` both (lightly's ``SimCLRProjectionHead``). After
    an optimizer step over the method's parameter groups, exactly the learned ones have moved."""
    method = tiny_simclr("head.last_batch_norm=true", f"head.last_batch_norm_params={params}")
    norm = method.head.layers[-1]
    assert isinstance(norm, torch.nn.BatchNorm1d)
    assert norm.affine == scale
    if not scale:
        assert norm.weight is None and norm.bias is None
        return
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    optimizer = torch.optim.SGD(parameter_groups(method, 1e-4, True), lr=0.5)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2)]
    method.training_step(views, StepContext(0, 0, 1, 1)).loss.backward()
    optimizer.step()
    assert not torch.equal(norm.weight, weight)
    assert torch.equal(norm.bias, bias) != shift
    if not shift:
        assert norm.bias.grad is None and not norm.bias.requires_grad
        assert torch.count_nonzero(norm.bias) == 0
