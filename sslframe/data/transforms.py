"""Image decoding and augmentations on uint8 tensors (torchvision transforms v2).

The SimCLR augmentation set (Chen et al. 2020, appendix A): random resized crop, horizontal
flip, colour jitter (brightness, contrast, saturation 0.8s, hue 0.2s) with p=0.8, grayscale
with p=0.2, Gaussian blur (sigma in [0.1, 2], kernel ~10% of the crop) and, for BYOL-style
views, solarisation. Multi-crop (SwAV, Caron et al. 2020): N global + M local crops.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2


def decode(data: bytes, decoder: str = "torchvision") -> torch.Tensor:
    """Bytes of a JPEG/PNG/... image to a uint8 RGB tensor (3 x H x W).

    ``torchvision`` decodes with torchvision.io (libjpeg-turbo, libpng) and falls back to PIL
    for what it cannot read (CMYK JPEG, TIFF, ...); ``pil`` decodes with PIL only.
    """
    if decoder == "torchvision":
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as exc:
            try:
                return decode_pil(data)
            except Exception:  # report torchvision's reason, the primary decoder's
                raise exc from None
    return decode_pil(data)


def decode_pil(data: bytes) -> torch.Tensor:
    """PIL decoding to a uint8 RGB tensor (3 x H x W)."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


class SeparableGaussianBlur(torch.nn.Module):
    """Gaussian blur with sigma drawn from ``sigma`` (SimCLR appendix A: [0.1, 2]) as two 1-D
    convolutions with reflected borders: torchvision's 2-D kernel is the outer product of the
    same 1-D one, so the result matches at 2k instead of k^2 multiplications per pixel."""

    def __init__(self, kernel_size: int, sigma: Sequence[float] = (0.1, 2.0)) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        sigma = torch.empty(1).uniform_(*self.sigma).item()
        return gaussian_blur(image, self.kernel_size, sigma)


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur a C x H x W image (uint8 or float) with a separable Gaussian kernel."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    across = kernel.view(1, 1, 1, -1).expand(channels, -1, -1, -1)
    down = kernel.view(1, 1, -1, 1).expand(channels, -1, -1, -1)
    out = image.float().unsqueeze(0)
    out = F.conv2d(F.pad(out, (half, half, 0, 0), mode="reflect"), across, groups=channels)
    out = F.conv2d(F.pad(out, (0, 0, half, half), mode="reflect"), down, groups=channels)
    out = out.squeeze(0)
    return out.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out.to(image.dtype)


def _blur_kernel(size: int) -> int:
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def view_transform(
    size: int,
    scale: Sequence[float],
    cfg: Any,
    blur_p: float,
    solarize_p: float,
) -> v2.Compose:
    """One augmented view: crop, flip, colour distortion, blur, solarize, to normalised float."""
    jitter = [f * cfg.jitter_strength for f in cfg.jitter]
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(cfg.flip_p),
    ]
    if cfg.jitter_p > 0 and any(jitter):
        steps.append(v2.RandomApply([v2.ColorJitter(*jitter)], p=cfg.jitter_p))
    if cfg.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(cfg.grayscale_p))
    if blur_p > 0:
        steps.append(v2.RandomApply([SeparableGaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
    return v2.Compose(steps)


class MultiCropTransform:
    """``global_crops`` large views then ``local_crops`` small views of one image."""

    def __init__(self, cfg: Any) -> None:
        self.views = [
            view_transform(
                cfg.global_size,
                cfg.global_scale,
                cfg,
                cfg.blur_p[i % len(cfg.blur_p)],
                cfg.solarize_p[i % len(cfg.solarize_p)],
            )
            for i in range(cfg.global_crops)
        ]
        local = view_transform(cfg.local_size, cfg.local_scale, cfg, cfg.local_blur_p, cfg.local_solarize_p)
        self.views += [local] * cfg.local_crops

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [view(image) for view in self.views]


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Deterministic evaluation view: resize the short side, centre crop, normalise."""
    return v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
