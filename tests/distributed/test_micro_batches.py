"""Gradient accumulation by trunk micro-batches (``trainer.accumulate``): losses over the whole
batch, gradients as without accumulation where the trunk has no batch norm, batch-norm running
statistics moved once by the micro-batches' mean, and a run that trains with it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslframe.config import compose_config
from sslframe.distributed.micro_batches import split_trunk_batches
from sslframe.errors import UserError
from sslframe.methods import METHODS, StepContext
from sslframe.models.trunks import build_trunk
from tests.helpers import TINY, tiny_config

VIT = ["trunk.arch=vit_tiny", "trunk.depth=2", "trunk.embed_dim=48", "trunk.num_heads=3"]
# Each method's Fashion-MNIST recipe; the trunk is the MAE recipe's ViT (4 px patches) for all.
VIT_CASES = ["simclr", "swav", "barlowtwins", "mae", "ijepa"]


def vit_method(name: str):
    trunk_cfg = compose_config("train", ["config=fmnist_mae", *VIT]).trunk
    cfg = compose_config("train", [f"config=fmnist_{name}"])
    return METHODS.get(name)(build_trunk(trunk_cfg), cfg.head, cfg.method), cfg


def views(cfg, batch: int = 12, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = max(1, cfg.transform.global_crops)
    return [torch.randn(batch, 3, 28, 28, generator=g) for _ in range(n)]


def step_gradients(method, crops: list[torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # the same masks (MAE, I-JEPA) on both sides
    ctx = StepContext(step=0, epoch=0, steps_per_epoch=10, total_steps=10)
    out = method.training_step(crops, ctx)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    return float(out.loss.detach()), grads


@pytest.mark.parametrize("case", VIT_CASES)
def test_layer_norm_trunk_gives_the_gradients_of_the_whole_batch(case: str) -> None:
    torch.manual_seed(0)
    whole, cfg = vit_method(case)
    split = copy.deepcopy(whole)
    split_trunk_batches(split.trunk, 3)
    crops = views(cfg)
    loss_whole, grads_whole = step_gradients(whole, crops)
    loss_split, grads_split = step_gradients(split, crops)
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    assert grads_split.keys() == grads_whole.keys()
    trunk_grads = [n for n in grads_whole if n.startswith("trunk.")]
    assert trunk_grads, "the trunk got no gradient"
    # Float rounding, summed in another order, relative to the largest gradient of the model:
    # some gradients are zero but for rounding (the final norm's bias under the head's batch norm).
    scale = max(float(g.abs().max()) for g in grads_whole.values())
    for name, grad in grads_whole.items():
        torch.testing.assert_close(grads_split[name], grad, rtol=1e-4, atol=5e-5 * scale, msg=name)


def bn(module: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_batch_norm_trunk_normalises_each_micro_batch_and_moves_statistics_once() -> None:
    """Reference computed independently: the trunk run on each micro-batch by hand (with graph,
    no recomputation), outputs joined, the same batch-coupled loss (NT-Xent-like)."""
    cfg = compose_config("train", ["config=quickstart_simclr", *TINY])
    torch.manual_seed(0)
    reference = build_trunk(cfg.trunk).train()
    split = copy.deepcopy(reference)
    split_trunk_batches(split, 2)
    x = torch.randn(8, 3, 16, 16)

    def coupled_loss(z: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z, dim=1)
        logits = z @ z.T / 0.1 - torch.eye(len(z)) * 1e4
        return F.cross_entropy(logits, torch.arange(len(z)).roll(4))

    # One copy of the trunk per micro-batch (each starts from the same statistics); their
    # gradients summed are the gradients of the shared parameters.
    copies = [copy.deepcopy(reference) for _ in range(2)]
    outputs = [c(chunk) for c, chunk in zip(copies, torch.tensor_split(x, 2), strict=True)]
    coupled_loss(torch.cat(outputs)).backward()
    per_chunk = [[(m.running_mean, m.running_var) for m in bn(c)] for c in copies]

    out = split(x)
    norms = bn(split)
    after_forward = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in norms]
    coupled_loss(out).backward()
    for j, m in enumerate(norms):
        mean, var, count = after_forward[j]
        torch.testing.assert_close(mean, (per_chunk[0][j][0] + per_chunk[1][j][0]) / 2)
        torch.testing.assert_close(var, (per_chunk[0][j][1] + per_chunk[1][j][1]) / 2)
        assert count == 1  # one update per step, not one per micro-batch
        # The recomputation in backward left the statistics alone.
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    for (name, q), *refs in zip(split.named_parameters(), *(c.parameters() for c in copies), strict=True):
        torch.testing.assert_close(q.grad, sum(p.grad for p in refs), rtol=1e-4, atol=1e-6, msg=name)


def test_recomputes_in_backward_and_leaves_no_grad_forwards_whole() -> None:
    cfg = compose_config("train", ["config=quickstart_simclr", *TINY])
    trunk = build_trunk(cfg.trunk).train()
    split_trunk_batches(trunk, 4)
    sizes: list[int] = []
    handle = trunk.conv1.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    x = torch.randn(8, 3, 16, 16)
    out = trunk(x)
    assert sizes == [2, 2, 2, 2]
    out.square().sum().backward()
    assert sizes == [2] * 8  # each micro-batch recomputed once in backward
    sizes.clear()
    with torch.no_grad():
        trunk(x)
    assert sizes == [8]
    handle.remove()
    teacher = copy.deepcopy(trunk)  # a copy splits its own batches, with its own modules
    teacher.conv1.register_forward_hook(lambda _m, inp, _o: sizes.append(-inp[0].shape[0]))
    trunk.conv1.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    sizes.clear()
    teacher(x).sum().backward()
    assert sizes == [-2] * 8


def test_accumulate_must_be_positive() -> None:
    with pytest.raises(UserError, match=r"trainer.accumulate.*1 or more"):
        compose_config("train", ["config=quickstart", "trainer.accumulate=0"])


def test_a_run_with_accumulation_trains(image_folder: Path, tmp_path: Path) -> None:
    from sslframe.engine.trainer import train

    cfg = tiny_config(image_folder, tmp_path, "trainer.max_steps=3", "trainer.accumulate=2")
    result = train(cfg)
    assert result.final_step == 3
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
