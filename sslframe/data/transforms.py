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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from sslframe.data import colour
from sslframe.data.recipe import ViewDraws, ViewSpec, crop_boxes, draw_view, view_specs


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


class PhotometricAugment:
    """The colour half of one view on one crop, fused into one pass in float32: colour jitter
    (brightness, contrast, saturation, hue in the drawn order), grayscale, Gaussian blur,
    solarisation (threshold 128/255), then normalisation; which ops run and their amounts come
    from the view's draws (``recipe.draw_view``).

    A uint8 crop is converted to float once, on entry. Brightness, contrast, saturation and
    grayscale follow torchvision's definitions, clamping to [0, 1] after each op
    (:mod:`sslframe.data.colour`); hue is rotated in YIQ rather than shifted in HSV, for speed
    (one 3 x 3 matrix instead of an HSV round trip, about 100x cheaper), unless ``hue_space`` is
    ``"hsv"`` (torchvision's exact shift). A grayscale crop stays one channel through blur and
    solarisation until normalisation.
    """

    def __init__(self, spec: ViewSpec, mean: Sequence[float], std: Sequence[float], hue_space: str = "yiq") -> None:
        if not 0 <= spec.jitter[3] <= 0.5:
            raise ValueError(f"hue jitter must lie in [0, 0.5], got {spec.jitter[3]}")
        self.spec = spec
        self.active = [f > 0 for f in spec.jitter]
        self.hue = functools.partial(colour.adjust_hue, space=hue_space)
        self.scale = 1 / torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
        self.shift = -torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1) * self.scale

    def __call__(self, image: torch.Tensor, draws: ViewDraws, i: int = 0) -> torch.Tensor:
        """Image ``i``'s ops of ``draws`` applied to ``image`` (its crop, uint8 or float)."""
        x = image.to(torch.float32, copy=True)
        if image.dtype == torch.uint8:
            x.mul_(1 / 255)
        if bool(draws.jitter[i]):
            ops = (colour.adjust_brightness, colour.adjust_contrast, colour.adjust_saturation, self.hue)
            factors = draws.factors[i].tolist()
            for op in draws.order[i].tolist():
                if self.active[op]:
                    x = ops[op](x, factors[op])
        if bool(draws.gray[i]):
            x = colour.grayscale(x)
        if bool(draws.blur[i]):
            x = gaussian_blur(x, self.spec.blur_kernel, float(draws.sigma[i]))
        if bool(draws.solarize[i]):
            x = colour.solarize(x)
        return torch.addcmul(self.shift, x, self.scale)


def random_resized_crop_box(
    height: int, width: int, scale: Sequence[float], g: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of one random resized crop (``recipe.crop_boxes`` for one image)."""
    top, left, h, w = crop_boxes(torch.tensor([[height, width]]), (float(scale[0]), float(scale[1])), g)[0].tolist()
    return int(top), int(left), int(h), int(w)


class AugmentedView:
    """One augmented view of one image: its draws (``recipe.draw_view``), then the crop and flip
    of the uint8 image (torchvision v2's antialiased resize), so the rest runs on the small crop,
    then the photometric ops and normalisation fused in float32 (:class:`PhotometricAugment`).
    All draws come from torch's default generator, which the loader seeds per sample."""

    def __init__(self, spec: ViewSpec, mean: Sequence[float], std: Sequence[float], hue_space: str = "yiq") -> None:
        self.spec = spec
        self.size = [spec.size, spec.size]
        self.interpolation = v2.InterpolationMode(spec.interpolation)
        self.photometric = PhotometricAugment(spec, mean, std, hue_space)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        draws = draw_view(self.spec, torch.tensor([image.shape[-2:]]))
        return self.apply(image, draws)

    def apply(self, image: torch.Tensor, draws: ViewDraws, i: int = 0) -> torch.Tensor:
        """Image ``i``'s draws applied to ``image`` (uint8, 3 x H x W)."""
        top, left, h, w = (int(v) for v in draws.boxes[i].tolist())
        crop = TF.resize(
            image[..., top : top + h, left : left + w], self.size, interpolation=self.interpolation, antialias=True
        )
        if bool(draws.flip[i]):
            crop = crop.flip(-1)
        return self.photometric(crop, draws, i)


class MultiCropTransform:
    """``global_crops`` large views then ``local_crops`` small views of one image (``recipe.view_specs``)."""

    def __init__(self, cfg: Any) -> None:
        self.views = [AugmentedView(spec, cfg.mean, cfg.std, cfg.hue_space) for spec in view_specs(cfg)]

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
