"""Colour operations on one float RGB image in [0, 1] (3 x H x W), and the YIQ hue rotation that
the batched augmentations share.

Brightness, contrast, saturation and grayscale follow torchvision's definitions (ITU-R 601 luma;
contrast blends with the mean of the grayscale image, saturation with the grayscale image; the
result clamped to [0, 1] after each op). Hue is rotated in YIQ, an approximation of torchvision's
HSV hue shift chosen for speed: one 3 x 3 matrix applied to RGB instead of an RGB -> HSV -> RGB
round trip (~0.15 ms against ~14 ms per 224 px crop on one CPU thread). Both turn colours about
the gray axis in the same direction and keep gray pixels gray, but HSV moves only the middle
channel and keeps the largest, where YIQ turns all three and keeps luma: for small shifts the
change is as large as torchvision's (within a few percent), at a cosine of about 0.7 to it
(``tests/data/test_fast_colour.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

LUMA = (0.299, 0.587, 0.114)
_LUMA_ROW = torch.tensor([LUMA], dtype=torch.float32)  # 1 x 3
_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)
# The hue rotation by a is FROM @ R(a) @ TO = A + cos(a) B + sin(a) C, with R's constant, cosine
# and sine parts moved through the colour transforms once, here.
_HUE_BASIS = torch.stack(
    [
        _FROM_YIQ @ torch.tensor(part, dtype=torch.float64) @ _TO_YIQ
        for part in (
            [[1, 0, 0], [0, 0, 0], [0, 0, 0]],
            [[0, 0, 0], [0, 1, 0], [0, 0, 1]],
            [[0, 0, 0], [0, 0, -1], [0, 1, 0]],
        )
    ]
)
_HUE_LISTS = _HUE_BASIS.flatten(1).tolist()  # the same, for one image without tensor ops


def hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """RGB -> RGB matrices (``angle.shape`` x 3 x 3) rotating the chroma (I, Q) plane of YIQ by
    ``angle`` radians and keeping luma (Y); in ``angle``'s dtype and device."""
    a, b, c = _HUE_BASIS.to(angle)
    return a + angle.cos()[..., None, None] * b + angle.sin()[..., None, None] * c


def _mix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``matrix`` (3 x 3) applied to every pixel of ``image`` (3 x H x W), clamped to [0, 1]."""
    return torch.mm(matrix.to(image.dtype), image.reshape(3, -1)).view_as(image).clamp_(0, 1)


def _matrix(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(3, 3)


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """Luma (1 x H x W) of an RGB image; expand it to three channels where needed."""
    return torch.mm(_LUMA_ROW.to(image.dtype), image.reshape(3, -1)).view(1, *image.shape[1:])


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale towards black: ``factor`` 0 gives black, 1 the image."""
    return (image * factor).clamp_(0, 1)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean of the grayscale image: ``factor`` 0 gives flat gray, 1 the image."""
    means = image.reshape(3, -1).mean(1).tolist()
    gray_mean = sum(w * m for w, m in zip(LUMA, means, strict=True))
    return (image * factor).add_((1 - factor) * gray_mean).clamp_(0, 1)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the grayscale image: ``factor`` 0 gives gray, 1 the image."""
    rest = 1 - factor
    return _mix(_matrix([factor * (i == j) + rest * LUMA[j] for i in range(3) for j in range(3)]), image)


def hue_angle(factor: Any) -> Any:
    """The (I, Q) rotation, in radians, of a hue factor (a fraction of a turn, float or tensor):
    negative, so that a positive factor turns red towards yellow as torchvision's HSV shift does.
    The per-image and the per-batch pipelines both take it from here."""
    return -2 * math.pi * factor


def adjust_hue(image: torch.Tensor, factor: float, space: str = "yiq") -> torch.Tensor:
    """Turn hues by ``factor`` of a full turn (torchvision's hue factor, in [-0.5, 0.5]): in YIQ,
    or with ``space="hsv"`` exactly as torchvision does (an HSV round trip). In YIQ a positive
    factor turns red towards yellow, as in HSV, which is a negative angle in (I, Q)."""
    if factor == 0:
        return image.clone()
    if space == "hsv":
        return TF.adjust_hue(image, factor)
    angle = hue_angle(factor)
    cos, sin = math.cos(angle), math.sin(angle)
    a, b, c = _HUE_LISTS
    return _mix(_matrix([x + cos * y + sin * z for x, y, z in zip(a, b, c, strict=True)]), image)


def solarize(image: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (torchvision's RandomSolarize(128) on uint8)."""
    return torch.where(image >= threshold, 1 - image, image)
