"""The narrow transformer that MAE's decoder and I-JEPA's predictor share: encoder tokens mapped
to its width, a learned mask token for every hidden position, a few blocks, a final norm and an
output layer. Each method places the tokens (MAE: the whole grid; I-JEPA: context then targets);
this module holds the layers and runs them."""

from __future__ import annotations

import torch
from torch import nn

from sslframe.models.trunks.vit import Block, cached_sincos, init_transformer_weights


class TokenPredictor(nn.Module):
    """``embed`` (encoder width to ``dim``), ``mask_token``, ``depth`` pre-norm blocks, ``norm``
    and an output linear layer to ``out_dim`` named ``out_name`` (the name the method's
    checkpoints use: MAE's ``pred``, I-JEPA's ``proj``)."""

    def __init__(
        self, encoder_dim: int, dim: int, depth: int, num_heads: int, out_dim: int, out_name: str, truncated: bool
    ) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_name = out_name
        self.add_module(out_name, nn.Linear(dim, out_dim))
        init_transformer_weights(self)
        # Both authors draw the mask token with std 0.02 (I-JEPA from a truncated normal).
        (nn.init.trunc_normal_ if truncated else nn.init.normal_)(self.mask_token, std=0.02)
        self._sincos: dict[tuple, torch.Tensor] = {}

    def positions(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """``(N, dim)`` fixed sine-cosine positions of the patch grid (cached per grid and device)."""
        return cached_sincos(self._sincos, self.dim, grid, like.device, like.dtype)[0]

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """The blocks, the final norm and the output layer over ``tokens`` ``(B, N, dim)``."""
        for block in self.blocks:
            tokens = block(tokens)
        return getattr(self, self.out_name)(self.norm(tokens))
