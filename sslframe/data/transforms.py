"""Image decoding and augmentations: geometry on uint8 tensors (torchvision v2's resize), then
the colour ops in float32 in one fused step.

The SimCLR augmentation set (Chen et al. 2020, appendix A): random resized crop, horizontal
flip, colour jitter (brightness, contrast, saturation 0.8s, hue 0.2s) with p=0.8, grayscale
with p=0.2, Gaussian blur (sigma in [0.1, 2], kernel ~10% of the crop) and, for BYOL-style
views, solarisation. Multi-crop (SwAV, Caron et al. 2020): N global + M local crops.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sslframe.data import colour


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


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur a C x H x W image (uint8 or float) with a Gaussian kernel and reflected borders, as
    torchvision's ``gaussian_blur``. The 2-D kernel is the outer product of a 1-D one, so the blur
    is ``rows @ image @ columns.T`` with banded matrices that hold the 1-D kernel and the
    reflection: two matrix products, several times faster on a CPU than a depthwise convolution."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    # Weights far below float32 resolution (the tails of a small sigma) become exact zeros: as
    # subnormal numbers they made the matrix products 10x slower (11 ms instead of 1.2 ms for a
    # 224 px crop at sigma 0.3) and add nothing.
    kernel = torch.where(kernel < 1e-12, 0.0, kernel)
    height, width = image.shape[-2:]
    columns = _band(width, kernel)
    rows = columns if height == width else _band(height, kernel)
    out = torch.matmul(rows, torch.matmul(image.float(), columns.T))
    return out.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else out.to(image.dtype)


def _band(n: int, kernel: torch.Tensor) -> torch.Tensor:
    """n x n matrix whose row i holds ``kernel`` centred on i, folded back at the borders."""
    index = _reflected(n, kernel.numel() // 2)
    return torch.zeros(n, n).scatter_add_(1, index, kernel.expand_as(index))


@functools.lru_cache(maxsize=64)
def _reflected(n: int, half: int) -> torch.Tensor:
    """Indices i + t (t in [-half, half]) of an axis of length n, reflected at its ends."""
    index = torch.arange(n)[:, None] + torch.arange(-half, half + 1)
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def _blur_kernel(size: int) -> int:
    return max(3, int(0.1 * size) // 2 * 2 + 1)


class PhotometricAugment:
    """The colour half of the SimCLR recipe on one crop, fused into one pass in float32: colour
    jitter with probability ``jitter_p`` (brightness, contrast, saturation, hue in a random order
    per sample, like torchvision's ColorJitter), grayscale, Gaussian blur (sigma ~ U(0.1, 2)),
    solarisation (threshold 128/255), then normalisation.

    A uint8 crop is converted to float once, on entry. Brightness, contrast, saturation and
    grayscale follow torchvision's definitions, clamping to [0, 1] after each op
    (:mod:`sslframe.data.colour`); hue is rotated in YIQ rather than shifted in HSV, for speed
    (one 3 x 3 matrix instead of an HSV round trip, about 100x cheaper), unless ``hue_space`` is
    ``"hsv"`` (torchvision's exact shift). A grayscale crop stays one channel through blur and
    solarisation until normalisation. All randomness comes from torch's default generator, so
    the loader's per-sample seeding keeps views reproducible.
    """

    def __init__(
        self,
        jitter: Sequence[float],
        jitter_p: float,
        grayscale_p: float,
        blur_kernel: int,
        blur_p: float,
        solarize_p: float,
        mean: Sequence[float],
        std: Sequence[float],
        hue_space: str = "yiq",
    ) -> None:
        brightness, contrast, saturation, hue = (float(f) for f in jitter)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must lie in [0, 0.5], got {hue}")
        self.ranges = [(max(0.0, 1 - f), 1 + f) for f in (brightness, contrast, saturation)] + [(-hue, hue)]
        self.active = [f > 0 for f in (brightness, contrast, saturation, hue)]
        self.jitter_p = jitter_p if any(self.active) else 0.0
        self.grayscale_p = grayscale_p
        self.blur_kernel = blur_kernel
        self.blur_p = blur_p
        self.solarize_p = solarize_p
        self.hue = functools.partial(colour.adjust_hue, space=hue_space)
        self.scale = 1 / torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
        self.shift = -torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1) * self.scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        # A fixed number of draws per call, whatever is applied.
        u = torch.rand(10, dtype=torch.float64).tolist()
        order = torch.randperm(4).tolist()
        x = image.to(torch.float32, copy=True)
        if image.dtype == torch.uint8:
            x.mul_(1 / 255)
        if u[0] < self.jitter_p:
            ops = (colour.adjust_brightness, colour.adjust_contrast, colour.adjust_saturation, self.hue)
            for i in order:
                if self.active[i]:
                    low, high = self.ranges[i]
                    x = ops[i](x, low + u[1 + i] * (high - low))
        if u[5] < self.grayscale_p:
            x = colour.grayscale(x)
        if u[6] < self.blur_p:
            x = gaussian_blur(x, self.blur_kernel, 0.1 + u[7] * (2.0 - 0.1))
        if u[8] < self.solarize_p:
            x = colour.solarize(x)
        return torch.addcmul(self.shift, x, self.scale)


def random_resized_crop_box(
    height: int, width: int, scale: Sequence[float], u: list[float], ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop covering ``scale`` of the image area with an
    aspect ratio log-uniform in ``ratio`` (Szegedy et al. 2015, the recipe of torchvision's
    RandomResizedCrop): up to 10 tries from the uniform draws ``u`` (4 per try), then the
    whole image cropped to the nearest allowed ratio."""
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for t in range(10):
        su, ru, tu, lu = u[4 * t : 4 * t + 4]
        target = area * (scale[0] + su * (scale[1] - scale[0]))
        aspect = math.exp(log_low + ru * (log_high - log_low))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(tu * (height - h + 1)), int(lu * (width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


class AugmentedView:
    """One augmented view: a random resized crop and a horizontal flip of the uint8 image
    (torchvision v2's antialiased resize), so the rest runs on the small crop, then the
    photometric ops and normalisation fused in float32 (:class:`PhotometricAugment`). The crop
    box is drawn here rather than by ``v2.RandomResizedCrop``, whose parameter sampling cost more
    than the resize of a 96 px crop; all draws come from torch's default generator."""

    def __init__(self, size: int, scale: Sequence[float], cfg: Any, blur_p: float, solarize_p: float) -> None:
        self.size = [size, size]
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip_p = cfg.flip_p
        self.photometric = PhotometricAugment(
            [f * cfg.jitter_strength for f in cfg.jitter],
            cfg.jitter_p,
            cfg.grayscale_p,
            _blur_kernel(size),
            blur_p,
            solarize_p,
            cfg.mean,
            cfg.std,
            cfg.hue_space,
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        u = torch.rand(41, dtype=torch.float64).tolist()  # 4 per crop try (10 tries), 1 for the flip
        top, left, h, w = random_resized_crop_box(image.shape[-2], image.shape[-1], self.scale, u)
        crop = TF.resize(image[..., top : top + h, left : left + w], self.size, antialias=True)
        if u[40] < self.flip_p:
            crop = crop.flip(-1)
        return self.photometric(crop)


class MultiCropTransform:
    """``global_crops`` large views then ``local_crops`` small views of one image."""

    def __init__(self, cfg: Any) -> None:
        self.views = [
            AugmentedView(
                cfg.global_size,
                cfg.global_scale,
                cfg,
                cfg.blur_p[i % len(cfg.blur_p)],
                cfg.solarize_p[i % len(cfg.solarize_p)],
            )
            for i in range(cfg.global_crops)
        ]
        local = AugmentedView(cfg.local_size, cfg.local_scale, cfg, cfg.local_blur_p, cfg.local_solarize_p)
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
