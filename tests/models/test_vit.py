"""The ViT trunk: sizes of the published models, position embeddings, visible-token encoding."""

from __future__ import annotations

import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from sslframe.config import compose_config
from sslframe.errors import UserError
from sslframe.models.multicrop import multicrop_forward
from sslframe.models.trunks import build_trunk
from sslframe.models.trunks.vit import VIT_ARCHS, VisionTransformer, ViTConfig, drop_path, sincos_pos_embed
from tests.methods.vit_runs import tiny_vit


def formula_params(dim: int, depth: int, patch: int, tokens: int) -> int:
    """Parameters counted from the architecture: per block qkv (3d^2 + 3d), projection (d^2 + d),
    MLP (4d^2 + 4d + 4d^2 + d), two layer norms (4d); patch projection (3 p^2 d + d), class token
    (d), learned positions (tokens d), final norm (2d)."""
    block = 12 * dim * dim + 13 * dim
    return depth * block + 3 * patch * patch * dim + dim + dim + tokens * dim + 2 * dim


@pytest.mark.parametrize("arch", list(VIT_ARCHS))
def test_every_arch_on_meta_device_has_the_formula_size(arch: str) -> None:
    dim, depth, heads = VIT_ARCHS[arch]
    patch = 14 if arch == "vit_huge" else 16
    with torch.device("meta"):
        vit = VisionTransformer(arch, patch_size=patch, pos_embed="learned")
        out = vit(torch.empty(2, 3, 224, 224))
    assert out.shape == (2, dim) and vit.out_dim == dim
    assert len(vit.blocks()) == depth and vit.blocks()[0].attn.num_heads == heads
    assert sum(p.numel() for p in vit.parameters()) == formula_params(dim, depth, patch, (224 // patch) ** 2)


@pytest.mark.parametrize(
    ("arch", "patch", "published"), [("vit_base", 16, 86e6), ("vit_large", 16, 307e6), ("vit_huge", 14, 632e6)]
)
def test_sizes_match_the_paper(arch: str, patch: int, published: float) -> None:
    # Dosovitskiy et al. 2021, Table 1 (with a 1000-class classifier, learned positions).
    with torch.device("meta"):
        vit = VisionTransformer(arch, patch_size=patch, pos_embed="learned")
    total = sum(p.numel() for p in vit.parameters()) + vit.out_dim * 1000 + 1000
    assert abs(total - published) / published < 0.015


def test_dinov2_giant_has_the_papers_size() -> None:
    """ViT-g/14 with SwiGLU: "1.1B parameters" (Oquab et al. 2024, sec. 5); SwiGLU's hidden width
    is 2/3 of the MLP's, so the feed-forward keeps the MLP's weight count (Shazeer 2020)."""
    with torch.device("meta"):
        vit = VisionTransformer("vit_giant", patch_size=14, pos_embed="learned", ffn="swiglu")
        mlp = VisionTransformer("vit_giant", patch_size=14, pos_embed="learned")
        assert vit(torch.empty(2, 3, 224, 224)).shape == (2, 1536)
    total = sum(p.numel() for p in vit.parameters())
    assert abs(total - 1.1e9) / 1.1e9 < 0.04
    weights = [
        sum(p.numel() for n, p in m.named_parameters() if ".mlp." in n and n.endswith("weight")) for m in (vit, mlp)
    ]
    assert weights[0] == weights[1]
    small = VisionTransformer("vit_tiny", patch_size=4, image_size=16, embed_dim=16, depth=1, num_heads=2, ffn="swiglu")
    fc1 = small.blocks_list[0].mlp.fc1
    assert (fc1.in_features, fc1.out_features) == (16, 2 * 48)  # 2/3 of 64 = 42.7, up to a multiple of 8
    assert small(torch.randn(2, 3, 16, 16)).shape == (2, 16)


def test_config_choices_list_every_arch() -> None:
    assert ViTConfig.choices["arch"] == tuple(VIT_ARCHS)


def test_sincos_embeddings_follow_the_formula() -> None:
    # Channel c < D/4 of the row half is sin(row / 10000^(c / (D/4))); then cos; then the column.
    dim, gh, gw = 16, 3, 5
    emb = sincos_pos_embed(dim, gh, gw)
    q = dim // 4
    for row, col, c in [(0, 0, 0), (2, 4, 1), (1, 3, 3), (2, 1, 2)]:
        freq = 1 / 10000 ** (c / q)
        token = emb[row * gw + col]
        expected = [math.sin(row * freq), math.cos(row * freq), math.sin(col * freq), math.cos(col * freq)]
        got = [token[c], token[q + c], token[2 * q + c], token[3 * q + c]]
        assert all(math.isclose(float(a), b, abs_tol=1e-6) for a, b in zip(got, expected, strict=True))


def test_learned_positions_interpolate_for_other_sizes() -> None:
    torch.manual_seed(0)
    vit = tiny_vit(pos_embed="learned")
    assert vit.position_embeddings(4, 4) is vit.pos_embed
    with torch.no_grad():
        vit.pos_embed.copy_(torch.linspace(-1, 1, 32).expand(1, 16, 32))  # the same vector at every position
    small = vit.position_embeddings(2, 2)
    assert small.shape == (1, 4, 32)
    torch.testing.assert_close(small, vit.pos_embed[:, :4])
    wide = vit.position_embeddings(3, 6)
    assert wide.shape == (1, 18, 32)
    # Global 16 px and local 8 px crops share the network (DINO-style multi-crop).
    out = multicrop_forward(vit, [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)])
    assert out.shape == (6, 32) and torch.isfinite(out).all()


def test_patchify_orders_patches_row_major() -> None:
    vit = tiny_vit()
    images = torch.randn(2, 3, 16, 16)
    patches = vit.patchify(images)
    assert patches.shape == (2, 16, 48)
    row, col = 2, 3
    expected = images[1, :, row * 4 : (row + 1) * 4, col * 4 : (col + 1) * 4].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(patches[1, row * 4 + col], expected)


def masked_attention_encoding(vit: VisionTransformer, images: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Every token encoded, but attention may only look at the class token and the visible
    patches (written out here without the trunk's attention code)."""
    tokens = vit.patch_tokens(images)
    x = torch.cat([vit.cls_token.expand(len(images), -1, -1), tokens], dim=1)
    allowed = torch.cat([torch.ones(len(images), 1, dtype=torch.bool), visible], dim=1)
    for block in vit.blocks():
        h = block.norm1(x)
        b, n, d = h.shape
        heads = block.attn.num_heads
        q, k, v = block.attn.qkv(h).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + block.attn.proj(attended)
        x = x + block.mlp(block.norm2(x))
    return vit.norm(x)


def test_visible_token_encoding_equals_encoding_with_hidden_tokens_dropped() -> None:
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    images = torch.randn(2, 3, 16, 16)
    keep = torch.stack([torch.randperm(16)[:5] for _ in range(2)])
    visible = torch.zeros(2, 16, dtype=torch.bool)
    visible.scatter_(1, keep, True)
    with torch.no_grad():
        encoded = vit.encode(images, keep)
        reference = masked_attention_encoding(vit, images, visible)
    assert encoded.shape == (2, 6, 32)
    torch.testing.assert_close(encoded[:, 0], reference[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encoded[:, 1:], torch.gather(reference[:, 1:], 1, keep[..., None].expand(-1, -1, 32)))
    # All patches kept, in any order: the same features as the full encoding, permuted.
    order = torch.randperm(16).expand(2, -1)
    with torch.no_grad():
        full = vit.encode(images)
        permuted = vit.encode(images, order)
    torch.testing.assert_close(permuted[:, 1:], full[:, 1:][:, order[0]], rtol=1e-5, atol=1e-5)


def test_pooling_choices() -> None:
    torch.manual_seed(0)
    vit = tiny_vit(class_token=False, pool="mean")
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(vit(images), vit.encode(images).mean(dim=1))
    assert vit.encode(images).shape == (2, 16, 32)


def test_config_builds_a_vit_and_bad_input_is_one_line() -> None:
    cfg = compose_config("train", ["config=mocov3_vit_small", "trunk.patch_size=8"])
    with torch.device("meta"):
        vit = build_trunk(cfg.trunk)
    assert isinstance(vit, VisionTransformer) and vit.out_dim == 384 and vit.patch_size == 8
    # A config read back from a checkpoint is a plain container.
    plain = OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(ViTConfig(arch="vit_tiny"))))
    with torch.device("meta"):
        assert build_trunk(plain).out_dim == 192
    with pytest.raises(UserError, match=re.escape("bad value for 'trunk.arch'")):
        compose_config("train", ["config=mae_vit_base", "trunk.arch=vit_gigantic"])
    with pytest.raises(UserError, match=re.escape("needs trunk.class_token=true")):
        tiny_vit(class_token=False, pool="cls")
    with pytest.raises(UserError, match=re.escape("not a multiple of trunk.patch_size=4")):
        tiny_vit()(torch.randn(1, 3, 18, 18))


def test_registers_layer_scale_drop_path_and_mask_token() -> None:
    torch.manual_seed(0)
    kwargs = {"patch_size": 4, "image_size": 16, "embed_dim": 32, "depth": 4, "num_heads": 2}
    vit = VisionTransformer(
        "vit_tiny", num_registers=3, layer_scale_init=1e-5, drop_path_rate=0.3, mask_token=True, **kwargs
    )
    images = torch.randn(2, 3, 16, 16)
    # Registers follow the class token and never enter the pooled feature.
    assert vit.num_prefix_tokens == 4 and vit.encode(images).shape == (2, 4 + 16, 32)
    # Stochastic depth rises linearly from 0 to the rate; LayerScale starts at its value, so at
    # init every block is close to the identity (CaiT's motivation).
    assert [b.drop_path_rate for b in vit.blocks_list] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert all(torch.equal(b.ls1.gamma, torch.full((32,), 1e-5)) for b in vit.blocks_list)
    vit.eval()
    tokens = torch.randn(2, 5, 32)
    block = vit.blocks_list[3]
    assert (block(tokens) - tokens).abs().max() < 1e-3
    # Eval is deterministic; in training a dropped branch leaves the sample unchanged, a kept one
    # is scaled by 1 / (1 - rate) (the expectation is the eval output).
    branch = torch.ones(20000, 1, 1)
    dropped = drop_path(branch, 0.3, training=True)
    assert ((dropped == 0) | ((dropped - 1 / 0.7).abs() < 1e-6)).all()
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.03) and torch.equal(drop_path(branch, 0.3, False), branch)
    # The mask token replaces the masked patches' embeddings, positions kept.
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :5] = True
    masked, plain = vit.patch_tokens(images, mask), vit.patch_tokens(images)
    positions = vit.position_embeddings(4, 4)[0]
    torch.testing.assert_close(masked[0, :5], vit.mask_token[0].expand(5, -1) + positions[:5])
    assert torch.equal(masked[0, 5:], plain[0, 5:]) and torch.equal(masked[1], plain[1])
    with pytest.raises(UserError, match=r"trunk\.mask_token=true"):
        VisionTransformer("vit_tiny", **kwargs).patch_tokens(images, mask)
    with pytest.raises(UserError, match=r"drop_path_rate within"):
        VisionTransformer("vit_tiny", drop_path_rate=1.0, **kwargs)


def test_teachers_have_no_stochastic_depth() -> None:
    """An EMA copy (DINO's teacher, BYOL's target...) runs every block: the authors build it
    without drop path (DINO's main_dino.py gives drop_path_rate to the student only)."""
    from sslframe.models.ema import frozen_copy

    student = VisionTransformer("vit_tiny", patch_size=4, image_size=16, embed_dim=32, depth=3, num_heads=2,
                                drop_path_rate=0.2)  # fmt: skip
    teacher = frozen_copy(student)
    assert [b.drop_path_rate for b in teacher.blocks_list] == [0.0, 0.0, 0.0]
    assert [b.drop_path_rate for b in student.blocks_list] == pytest.approx([0.0, 0.1, 0.2])
    teacher.train()
    images = torch.randn(4, 3, 16, 16)
    assert torch.equal(teacher(images), teacher(images))  # nothing random left in training mode
