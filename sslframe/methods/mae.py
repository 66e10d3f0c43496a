"""MAE: masked autoencoders (He et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslframe.errors import UserError
from sslframe.losses.masked import masked_patch_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.token_predictor import TokenPredictor
from sslframe.models.trunks import Trunk
from sslframe.models.trunks.vit import VisionTransformer


@dataclass
class MAEConfig:
    """MAE (He et al. 2022): reconstruct randomly masked patches from the visible ones."""

    name: str = "mae"
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # Target = pixels of each patch normalised by the patch's own mean and std.
    norm_pix_loss: bool = True


def random_masking(
    batch: int, num_patches: int, mask_ratio: float, device: torch.device, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image uniform random masking (MAE sec. 3): ``(keep, mask)``.

    ``keep`` ``(B, K)`` holds the indices of the ``K = N * (1 - mask_ratio)`` visible patches
    (in random order); ``mask`` ``(B, N)`` is 1 at hidden patches and 0 at visible ones.
    """
    visible = int(num_patches * (1 - mask_ratio))
    if not 0 < visible < num_patches:
        raise UserError(f"method.mask_ratio={mask_ratio} leaves {visible} of {num_patches} patches visible")
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    keep = noise.argsort(dim=1)[:, :visible]
    mask = torch.ones(batch, num_patches, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


class MAEDecoder(TokenPredictor):
    """The light decoder: visible-token features and a shared mask token at every hidden position,
    with fixed sine-cosine positions, through a few transformer blocks, then a linear map to each
    patch's pixels (MAE sec. 3, "MAE decoder")."""

    def __init__(self, encoder_dim: int, patch_pixels: int, dim: int, depth: int, num_heads: int) -> None:
        super().__init__(encoder_dim, dim, depth, num_heads, patch_pixels, out_name="pred", truncated=False)
        # The authors' models_mae.py (initialize_weights / _init_weights) draws every linear layer of
        # the decoder from a Xavier-uniform distribution ("following official JAX ViT"), biases 0,
        # layer norms 1 and 0, the mask token from N(0, 0.02); lightly's MAEDecoderTIMM does the same.
        # The shared TokenPredictor's truncated normal (std 0.02) is I-JEPA's and gives far smaller
        # weights at these widths.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
        """``latent`` ``(B, prefix + K, D_enc)`` -> pixel predictions ``(B, N, patch_pixels)``."""
        x = self.embed(latent)
        b, n = x.shape[0], grid[0] * grid[1]
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, self.dim), x[:, prefix:])
        full = full + self.positions(grid, x)
        return self.predict(torch.cat([x[:, :prefix], full], dim=1))[:, prefix:]


@METHODS.register("mae", schema=MAEConfig)
class MAE(Method):
    """ViT encoder on the visible patches of one view, decoder (``head``) on all positions, loss on
    the hidden patches only.

    MAE needs no second view: it reads ``crops[0]``. Its recipe is one random-resized crop with a
    flip and no colour augmentation (``transform.global_crops=1 transform.local_crops=0``).
    """

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        if not isinstance(trunk, VisionTransformer):
            raise UserError("method=mae needs a ViT trunk (trunk=vit)")
        self.trunk = trunk
        patch_pixels = trunk.patch_size**2 * 3
        self.head = MAEDecoder(trunk.embed_dim, patch_pixels, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads)
        self.mask_ratio = cfg.mask_ratio
        self.norm_pix_loss = cfg.norm_pix_loss

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        images = crops[0]
        grid = self.trunk.grid_size(images)
        keep, mask = random_masking(images.shape[0], grid[0] * grid[1], self.mask_ratio, images.device)
        latent = self.trunk.encode(images, keep)
        pred = self.head(latent, keep, grid, self.trunk.num_prefix_tokens)
        loss = masked_patch_loss(pred, self.trunk.patchify(images), mask, self.norm_pix_loss)
        # Mean of the visible tokens: the class token gets no direct training signal in MAE.
        pooled = latent.detach()[:, self.trunk.num_prefix_tokens :].float().mean(dim=1)
        return StepOutput(loss=loss, embeddings=F.normalize(pooled, dim=1))
