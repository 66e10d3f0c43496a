"""iBOT and DINOv2: the masked-patch loss against a step-by-step computation of the paper's
equation, block-wise masks, the teacher's targets (centred, or Sinkhorn-Knopp over the global
batch with unequal token counts per rank), short runs that learn without collapse, and an exact
resume through the trainer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.ibot import block_mask, ibot_masks, masked_patch_loss, masked_tokens
from sslframe.losses.sinkhorn import sinkhorn_knopp
from sslframe.methods.ibot import IBOT, DINOv2, DINOv2Config, IBOTConfig
from sslframe.models.heads import MLPHeadConfig
from tests.distributed.harness import run_distributed
from tests.helpers import TINY, assert_resumes_exactly
from tests.methods.generated_views import one_thread
from tests.methods.generated_views import short_run as views_run
from tests.methods.vit_runs import tiny_vit


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_masked_patch_loss_is_the_papers_equation() -> None:
    """L_MIM = 1/B sum_b 1/|M_b| sum_{i in M_b} -P_t(i) . log P_s(i) (Zhou et al. 2022, eq. 2 with
    the authors' per-image mean); an image without masked patches adds 0. Values and gradients
    against a loop over images and tokens."""
    torch.manual_seed(0)
    masks = torch.zeros(4, 6, dtype=torch.bool)
    masks[0, [1, 4]] = True
    masks[2, [0, 2, 3]] = True
    masks[3, 5] = True  # image 1 has none
    scores = torch.randn(4, 6, 10, requires_grad=True)
    teacher = F.softmax(torch.randn(4, 6, 10), dim=-1)
    rows, columns, weights = masked_tokens(masks)
    loss = masked_patch_loss(scores[rows, columns], teacher[rows, columns], weights, batch=4, student_temperature=0.1)
    reference = torch.zeros(())
    for b in range(4):
        tokens = masks[b].nonzero().flatten().tolist()
        if tokens:
            per_token = [-(teacher[b, i] * F.log_softmax(scores[b, i] / 0.1, dim=-1)).sum() for i in tokens]
            reference = reference + sum(per_token) / len(tokens)
    reference = reference / 4
    torch.testing.assert_close(loss, reference)
    (grad,) = torch.autograd.grad(loss, scores)
    (ref_grad,) = torch.autograd.grad(reference, scores)
    torch.testing.assert_close(grad, ref_grad)
    assert grad[1].abs().sum() == 0 and grad[0, 0].abs().sum() == 0  # unmasked tokens get nothing


def test_block_masks_reach_their_ratio_in_rectangles() -> None:
    g = torch.Generator().manual_seed(0)
    for target in (20, 60, 98):
        mask = block_mask((14, 14), target, g)
        # Never more than asked; under it only when no further rectangle fits (BEiT's rule).
        assert target - 8 <= int(mask.sum()) <= target
    masks = ibot_masks(2000, (14, 14), probability=0.5, ratio=(0.1, 0.5), generator=g)
    share = masks.float().mean(dim=1)
    masked = share > 0
    assert 0.45 < masked.float().mean() < 0.55  # half of the images (--pred_ratio 0 0.3)
    assert share[masked].min() >= 0.1 - 8 / 196 and share[masked].max() <= 0.5
    assert 0.25 < share[masked].mean() < 0.32  # uniform over 0.1-0.5, a little under by BEiT's rule
    # Masked patches lie in blocks: most have a masked neighbour.
    grid = masks[masked][0].view(14, 14)
    neighbours = F.conv2d(grid.float()[None, None], torch.ones(1, 1, 3, 3), padding=1)[0, 0] - grid.float()
    assert (neighbours[grid] > 0).float().mean() > 0.9


def tiny_ibot(cfg: IBOTConfig, **vit: object) -> IBOT:
    head = MLPHeadConfig(hidden_dims=[64], output_dim=16, batch_norm=False, activation="gelu")
    trunk = tiny_vit(mask_token=True, **vit)
    return (IBOT if cfg.name == "ibot" else DINOv2)(trunk, head, cfg)


def test_the_student_sees_masked_globals_and_the_teacher_whole_ones() -> None:
    torch.manual_seed(0)
    method = tiny_ibot(IBOTConfig(out_dim=32, patch_out_dim=32, mask_probability=1.0))
    seen: dict[str, list[tuple[int, torch.Tensor | None]]] = {"student": [], "teacher": []}

    def spy(name: str, original):
        def encode(images: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None):
            seen[name].append((images.shape[-1], mask))
            return original(images, keep, mask)

        return encode

    method.trunk.encode = spy("student", method.trunk.encode)  # type: ignore[method-assign]
    method.teacher_trunk.encode = spy("teacher", method.teacher_trunk.encode)  # type: ignore[method-assign]
    images = torch.randn(3, 3, 16, 16)
    out = method.training_step([images, images.flip(-1), torch.randn(3, 3, 8, 8)], _ctx())
    # Student: the two 16 px globals masked together, the 8 px local whole; teacher: globals whole.
    (size, student_mask), (local_size, local_mask) = seen["student"]
    assert size == 16 and student_mask is not None and student_mask.shape == (6, 16)
    assert local_size == 8 and local_mask is None and seen["teacher"] == [(16, None)]
    assert bool(student_mask.any(dim=1).all())  # mask_probability 1: every global crop masked
    assert out.logs["patch_loss"] > 0 and torch.isfinite(out.loss)
    with pytest.raises(UserError, match="mask token"):
        IBOT(tiny_vit(), MLPHeadConfig(hidden_dims=[8], output_dim=4, batch_norm=False), IBOTConfig())


def test_dinov2_heads_learn_their_last_layers_norm() -> None:
    """The authors' dinov2/layers/dino_head.py sets the last layer's weight-norm scale to 1 and
    leaves it trainable (DINO's norm_last_layer freeze is gone); iBOT keeps DINO's freeze."""
    torch.manual_seed(0)
    dinov2 = tiny_ibot(DINOv2Config(out_dim=32, patch_out_dim=32))
    for head in (dinov2.head, dinov2.patch_head):
        scale = head.last_layer.weight_g
        assert scale is not None and scale.requires_grad and torch.equal(scale, torch.ones_like(scale))
    for teacher in (dinov2.teacher_head, dinov2.teacher_patch_head):
        assert not any(p.requires_grad for p in teacher.parameters())
    ibot = tiny_ibot(IBOTConfig(out_dim=32, patch_out_dim=32))
    assert ibot.head.last_layer.weight_g is None


def _ctx(step: int = 0):
    from sslframe.methods import StepContext

    return StepContext(step, 0, 10, 100)


def test_centres_follow_the_teacher_and_skip_a_skipped_step() -> None:
    torch.manual_seed(1)
    method = tiny_ibot(IBOTConfig(out_dim=32, patch_out_dim=32))
    images = torch.randn(4, 3, 16, 16)
    method.training_step([images, images], _ctx())
    assert method._next is not None
    expected_cls, expected_patch = (t.clone() for t in method._next)
    skipped = _ctx()
    skipped.skipped = torch.ones(())
    method.after_optimizer_step(skipped)
    assert torch.equal(method.center, torch.zeros(1, 32)) and torch.equal(method.patch_center, torch.zeros(1, 32))
    method.training_step([images, images], _ctx())
    method.after_optimizer_step(_ctx())
    torch.testing.assert_close(method.center, expected_cls)
    torch.testing.assert_close(method.patch_center, expected_patch)
    # The patch centre is 0.1 x the mean teacher patch output over every token of both crops.
    with torch.no_grad():
        tokens = method.teacher_trunk.encode(torch.cat([images, images]))[:, method.trunk.num_prefix_tokens :]
        mean = method.teacher_head(tokens.flatten(0, 1)).mean(dim=0, keepdim=True)
    assert method.teacher_patch_head is None  # a shared head by default (iBOT's ViT-S recipe)
    torch.testing.assert_close(method.patch_center, 0.1 * mean, rtol=1e-4, atol=1e-6)


def _sinkhorn_share(rank: int, world: int, scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
    import torch.distributed as dist

    start = sum(counts[:rank])
    return sinkhorn_knopp(scores[start : start + counts[rank]], 0.07, 3, dist.group.WORLD)


def test_sinkhorn_targets_span_ranks_with_unequal_token_counts() -> None:
    """DINOv2 centres the masked tokens' outputs by Sinkhorn-Knopp over the global batch, and
    ranks mask different numbers of tokens: 2 ranks with 5 and 11 rows equal 1 process with 16."""
    torch.manual_seed(2)
    scores = torch.randn(16, 8)
    whole = sinkhorn_knopp(scores, 0.07, 3)
    parts = run_distributed(_sinkhorn_share, 2, scores, [5, 11])
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)
    # A rank alone would balance its own rows instead.
    assert not torch.allclose(sinkhorn_knopp(scores[:5], 0.07, 3), whole[:5], atol=1e-3)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_short_run_learns_without_collapse(name: str) -> None:
    """16 SGD steps on generated textures, 2 global and 2 local crops (the DINO test's protocol,
    tests/methods/test_dino.py: a batch-norm head, without which DINO's running centre flattens a
    tiny network's outputs in so few steps; DINOv2's Sinkhorn targets need no such help)."""
    small = {"out_dim": 64, "patch_out_dim": 64}
    cfg = IBOTConfig(**small) if name == "ibot" else DINOv2Config(**small)
    head = MLPHeadConfig(hidden_dims=[64], output_dim=16, batch_norm=True, activation="gelu")
    torch.manual_seed(0)
    extra = {"num_registers": 1, "layer_scale_init": 0.1} if name == "dinov2" else {}
    method = (IBOT if name == "ibot" else DINOv2)(tiny_vit(mask_token=True, **extra), head, cfg)
    run = views_run(method, steps=16, lr=0.01, local_crops=2)
    assert sum(run.losses[-3:]) / 3 < 0.9 * sum(run.losses[:3]) / 3, run.losses
    assert run.embedding_std > 0.2 / run.embedding_dim**0.5


def test_dinov2_resumes_exactly_through_the_trainer(image_folder: Path, tmp_path: Path) -> None:
    """Stopped after 2 of 4 steps and resumed: the same losses as the uninterrupted run (masks
    come from the checkpointed generator; the teacher, the heads and the schedule from the step)."""
    tiny = [o for o in TINY if not o.startswith(("trunk", "head", "transform.global_size", "transform.local"))]
    vit = ["trunk.arch=vit_tiny", "trunk.embed_dim=32", "trunk.depth=2", "trunk.num_heads=2", "trunk.patch_size=4"]
    vit += ["trunk.image_size=16", "transform.global_size=16", "transform.local_size=8", "transform.local_crops=2"]
    small = ["head.hidden_dims=[32]", "method.out_dim=64", "method.patch_out_dim=64", "trainer.precision=fp32"]

    data = ["data=folder", f"data.path={image_folder}", "trainer.max_epochs=1", "data.batch_size=8"]
    assert_resumes_exactly(["config=dinov2_vit_small", *tiny, *vit, *small, *data], tmp_path)


def test_bad_settings_are_one_line_errors() -> None:
    head = MLPHeadConfig(hidden_dims=[8], output_dim=4, batch_norm=False)
    with pytest.raises(UserError, match=r"trunk\.pool=cls"):
        IBOT(tiny_vit(mask_token=True, pool="mean"), head, IBOTConfig())
    with pytest.raises(UserError, match=r"method\.mask_ratio"):
        IBOT(tiny_vit(mask_token=True), head, IBOTConfig(mask_ratio=[0.5, 0.1]))
    with pytest.raises(UserError, match=r"patch_out_dim equal"):
        IBOT(tiny_vit(mask_token=True), head, IBOTConfig(patch_out_dim=16))
