"""The decode + augmentation pipeline: separable blur, decoders and their fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from sslframe.data.transforms import decode, gaussian_blur


@pytest.mark.parametrize(("size", "kernel", "sigma"), [(32, 5, 0.4), (40, 23, 1.7)])
def test_separable_blur_matches_torchvision(size: int, kernel: int, sigma: float) -> None:
    image = torch.rand(3, size, size + 3)
    expected = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    torch.testing.assert_close(gaussian_blur(image, kernel, sigma), expected, atol=1e-5, rtol=0)
    as_uint8 = (image * 255).round().to(torch.uint8)
    diff = gaussian_blur(as_uint8, kernel, sigma).int() - TF.gaussian_blur(as_uint8, [kernel] * 2, [sigma] * 2).int()
    assert diff.abs().max() <= 1  # rounding only


def _encoded(fmt: str) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(0).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue(), pixels


def test_decoders_agree_and_pil_covers_what_torchvision_cannot_read() -> None:
    png, pixels = _encoded("PNG")
    for decoder in ("torchvision", "pil"):
        assert torch.equal(decode(png, decoder), torch.from_numpy(pixels).permute(2, 0, 1))
    tiff, pixels = _encoded("TIFF")
    assert torch.equal(decode(tiff), torch.from_numpy(pixels).permute(2, 0, 1))
    with pytest.raises(RuntimeError):
        decode(b"plain text")
