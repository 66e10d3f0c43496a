"""Vision Transformer trunk (Dosovitskiy et al. 2021), one class driven by a table of sizes.

Besides pooled features for the usual methods, it offers the token-level interface that masked
methods need: ``patchify`` (pixel targets, MAE), ``patch_tokens`` (patch embeddings with their
positions) and ``encode(images, keep)`` (run the encoder on a subset of the patches only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sslframe.errors import UserError
from sslframe.models.trunks.base import Trunk
from sslframe.registry import Choices

# name -> (embed_dim, depth, num_heads). Tiny and small: Touvron et al. 2021 (DeiT, Table 1);
# base, large and huge: Dosovitskiy et al. 2021, Table 1. The MLP is 4x wider than the tokens.


@dataclass
class ViTConfig:
    """Vision Transformer trunks (Dosovitskiy et al. 2021; tiny and small from Touvron et al. 2021)."""

    name: str = "vit"
    arch: str = "vit_base"
    patch_size: int = 16
    # Image side the learned position embeddings are made for; other sides interpolate them.
    image_size: int = 224
    # sincos: fixed 2-D sine-cosine (MAE, I-JEPA, MoCo v3); learned: trained parameters.
    pos_embed: str = "sincos"
    class_token: bool = True
    # Pooled feature: the class token after the final norm, or the mean of the patch tokens.
    pool: str = "cls"
    # 0 keeps the arch's value (MoCo v3's ViT-S uses 12 heads; tests use tiny widths).
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    # Register tokens (Darcet et al. 2024, *Vision Transformers Need Registers*): learned tokens
    # after the class token, without positions, dropped from the output (DINOv2 with registers: 4).
    num_registers: int = 0
    # LayerScale (Touvron et al. 2021, CaiT, sec. 2.1): each residual branch scaled per channel by
    # a learned vector started at this value (0: off; DINOv2 uses 1e-5).
    layer_scale_init: float = 0.0
    # Stochastic depth (Huang et al. 2016): residual branches dropped per sample in training with
    # a probability rising linearly from 0 at the first block to this at the last (DINO: 0.1).
    drop_path_rate: float = 0.0
    # The same stochastic-depth rate in every block instead of the linear rise (DINOv2's
    # drop_path_uniform, set in its configurations).
    drop_path_uniform: bool = False
    # A learned mask token that ``encode(images, mask=...)`` puts in place of masked patches
    # (iBOT, DINOv2: the student sees the masked image).
    mask_token: bool = False
    # The blocks' feed-forward layer: mlp (GELU) or swiglu (Shazeer 2020; DINOv2's ViT-g/14).
    ffn: str = "mlp"
    choices: ClassVar[Choices] = {
        "arch": ("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_giant"),
        "ffn": ("mlp", "swiglu"),
        "pos_embed": ("sincos", "learned"),
        "pool": ("cls", "mean"),
    }


VIT_ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_huge": (1280, 32, 16),
    # DINOv2's ViT-g (Oquab et al. 2024, sec. 5 and Table 17; vit_giant2 in the authors'
    # vision_transformer.py): 1536 wide in 24 heads of 64, 40 blocks; 1.1B parameters with SwiGLU.
    "vit_giant": (1536, 40, 24),
}
MLP_RATIO = 4.0


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings, ``(grid_h * grid_w, dim)`` in row-major order.

    Half of the channels encode the row and half the column, each with the sine/cosine
    frequencies of Vaswani et al. 2017 (sec. 3.5), as used by MAE (He et al. 2022, appendix A.1).
    """
    if dim % 4:
        raise ValueError(f"sine-cosine position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def cached_sincos(
    cache: dict[tuple, torch.Tensor],
    dim: int,
    grid: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(1, N, dim)`` sine-cosine positions for ``grid`` on ``device``, from ``cache`` after the
    first call for that grid, device and dtype."""
    key = (dim, *grid, device, dtype)
    if key not in cache:
        cache[key] = sincos_pos_embed(dim, *grid).to(device=device, dtype=dtype).unsqueeze(0)
    return cache[key]


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise UserError(f"ViT width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (CaiT's LayerScale; timm's names)."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, each sample's branch is zeroed with probability ``rate``
    and the others scaled by ``1 / (1 - rate)`` (the expectation is unchanged); identity in eval.
    Drawn from torch's generator, whose state the checkpoints keep (exact resume)."""
    if not training or rate <= 0.0:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020, *GLU Variants Improve Transformer*):
    ``fc2(silu(x W1) * (x W2))``. The hidden width is two thirds of the MLP's, rounded up to a
    multiple of 8, so the parameter count matches (DINOv2's SwiGLUFFNFused does the same)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, each branch
    optionally scaled (LayerScale) and dropped per sample (stochastic depth)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = MLP_RATIO, layer_scale_init: float = 0.0,
        drop_path_rate: float = 0.0, ffn: str = "mlp",
    ) -> None:  # fmt: skip
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLU if ffn == "swiglu" else Mlp)(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init > 0 else nn.Identity()
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.ls1(self.attn(self.norm1(x))), self.drop_path_rate, self.training)
        return x + drop_path(self.ls2(self.mlp(self.norm2(x))), self.drop_path_rate, self.training)


def init_transformer_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and zero biases (the DeiT/timm ViT initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index[b]`` of ``tokens[b]`` for every sample: ``(B, N, D), (B, K) -> (B, K, D)``."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class VisionTransformer(Trunk):
    """ViT: patch embedding, optional class token, position embeddings, blocks, final norm.

    ``forward`` returns the pooled feature (class token after the final norm, or the mean of
    the patch tokens). Inputs of another size than ``image_size`` get their position
    embeddings recomputed (sine-cosine) or bicubically interpolated (learned), so DINO's
    96-pixel local crops and 224-pixel global crops share one network.
    """

    # Only the patch embedding is a convolution: the memory layout does not matter.
    channels_last_devices = ()

    def __init__(
        self,
        arch: str = "vit_base",
        patch_size: int = 16,
        image_size: int = 224,
        pos_embed: str = "sincos",
        class_token: bool = True,
        pool: str = "cls",
        embed_dim: int = 0,
        depth: int = 0,
        num_heads: int = 0,
        num_registers: int = 0,
        layer_scale_init: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        mask_token: bool = False,
        ffn: str = "mlp",
    ) -> None:
        super().__init__()
        if ffn not in ("mlp", "swiglu"):
            raise UserError(f"bad value for 'trunk.ffn': '{ffn}'; valid choices: mlp, swiglu")
        if num_registers < 0 or layer_scale_init < 0 or not 0.0 <= drop_path_rate < 1.0:
            raise UserError(
                "trunk.num_registers and trunk.layer_scale_init must be >= 0 and trunk.drop_path_rate within [0, 1)"
            )
        if arch not in VIT_ARCHS:
            raise UserError(f"unknown ViT arch '{arch}'; valid choices: {', '.join(VIT_ARCHS)}")
        if pool == "cls" and not class_token:
            raise UserError("trunk.pool=cls needs trunk.class_token=true (or use trunk.pool=mean)")
        if pos_embed not in ("sincos", "learned"):
            raise UserError(f"bad value for 'trunk.pos_embed': '{pos_embed}'; valid choices: sincos, learned")
        table_dim, table_depth, table_heads = VIT_ARCHS[arch]
        dim = embed_dim or table_dim
        self.out_dim = self.embed_dim = dim
        self.num_heads = num_heads or table_heads
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.pool = pool
        self.pos_embed_kind = pos_embed
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, num_registers, dim)) if num_registers else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        # Tokens before the patches in ``encode``'s output: the class token, then the registers.
        self.num_prefix_tokens = (1 if class_token else 0) + num_registers
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, dim)) if pos_embed == "learned" else None
        depth = depth or table_depth
        # Stochastic depth rises linearly over the blocks (Huang et al. 2016; DINO's ViT).
        rates = [drop_path_rate if drop_path_uniform else drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks_list = nn.ModuleList(
            Block(dim, self.num_heads, layer_scale_init=layer_scale_init, drop_path_rate=r, ffn=ffn) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()
        # Fixed sine-cosine positions per (grid, device, dtype): computed once, so a step never
        # builds them on the host and copies them over again.
        self._sincos: dict[tuple, torch.Tensor] = {}

    def _init_weights(self) -> None:
        init_transformer_weights(self)
        # The patch projection is a linear map of flattened patches (MAE's Xavier initialisation).
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.embed_dim, -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=0.02)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def blocks(self) -> list[nn.Module]:
        return list(self.blocks_list)

    def grid_size(self, images: torch.Tensor) -> tuple[int, int]:
        """Patches per column and per row for images of this size."""
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise UserError(f"image size {h}x{w} is not a multiple of trunk.patch_size={self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def position_embeddings(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``(1, grid_h * grid_w, D)`` position embeddings of the patch tokens for this grid."""
        if self.pos_embed is None:
            return cached_sincos(self._sincos, self.embed_dim, (grid_h, grid_w), self.patch_embed.weight.device)
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embed
        square = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, N, p * p * 3)``: each patch's pixels, row-major patches (MAE's targets)."""
        gh, gw = self.grid_size(images)
        p = self.patch_size
        x = images.reshape(images.shape[0], 3, gh, p, gw, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(images.shape[0], gh * gw, p * p * 3)

    def patch_tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded patches plus their position embeddings, ``(B, N, D)``, without the class token.
        ``mask`` (``(B, N)`` bool) puts the mask token in place of the masked patches' embeddings
        (their positions are kept), as iBOT's and DINOv2's student sees a masked image."""
        gh, gw = self.grid_size(images)
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        if mask is not None:
            if self.mask_token is None:
                raise UserError("masking the student's patches needs trunk.mask_token=true")
            tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        return tokens + self.position_embeddings(gh, gw).to(tokens.dtype)

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token and the registers (if any), apply the blocks and the final norm."""
        prefix = [t for t in (self.cls_token, self.reg_token) if t is not None]
        if prefix:
            tokens = torch.cat([*(t.to(tokens.dtype).expand(tokens.shape[0], -1, -1) for t in prefix), tokens], dim=1)
        for block in self.blocks_list:
            tokens = block(tokens)
        return self.norm(tokens)

    def encode(
        self, images: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token features after the final norm, ``(B, prefix + K, D)`` (prefix: the class token,
        then the registers).

        ``keep`` (``(B, K)`` patch indices) encodes only those patches: the others never enter
        the transformer (MAE's visible-patch encoder, I-JEPA's context encoder). ``mask``
        (``(B, N)`` bool) encodes every patch with the masked ones replaced by the mask token.
        """
        tokens = self.patch_tokens(images, mask)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        return self.run_blocks(tokens)

    def pool_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The pooled feature of ``encode``'s output (registers never enter it)."""
        if self.pool == "cls":
            return features[:, 0]
        return features[:, self.num_prefix_tokens :].mean(dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_tokens(self.encode(x))
