"""The decode + augmentation pipeline: separable blur, decoders and their fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from sslframe.config.schema import MultiCropConfig
from sslframe.data.recipe import crop_boxes, view_specs
from sslframe.data.transforms import AugmentedView, decode, gaussian_blur, random_resized_crop_box


# sigma 0.1 with 23 taps: the tails underflow to subnormal floats, which the blur zeroes (speed).
@pytest.mark.parametrize(("size", "kernel", "sigma"), [(32, 5, 0.4), (40, 23, 1.7), (40, 23, 0.1)])
def test_separable_blur_matches_torchvision(size: int, kernel: int, sigma: float) -> None:
    image = torch.rand(3, size, size + 3)
    expected = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    torch.testing.assert_close(gaussian_blur(image, kernel, sigma), expected, atol=1e-5, rtol=0)
    as_uint8 = (image * 255).round().to(torch.uint8)
    diff = gaussian_blur(as_uint8, kernel, sigma).int() - TF.gaussian_blur(as_uint8, [kernel] * 2, [sigma] * 2).int()
    assert diff.abs().max() <= 1  # rounding only


@pytest.mark.parametrize(("height", "width"), [(256, 256), (40, 300), (300, 40), (7, 5)])
def test_random_resized_crop_boxes_follow_the_recipe(height: int, width: int) -> None:
    """Inside the image; where a try succeeds, area in ``scale`` of the image's and aspect ratio
    in [3/4, 4/3] (up to rounding of the sides); otherwise the largest centred box of an allowed
    ratio (torchvision's RandomResizedCrop fallback)."""
    g = torch.Generator().manual_seed(0)
    scale = (0.14, 1.0)
    boxes = crop_boxes(torch.tensor([[height, width]] * 300), scale, g)
    for top, left, h, w in (tuple(int(v) for v in box) for box in boxes.tolist()):
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width and h > 0 and w > 0
        fraction, ratio = h * w / (height * width), w / h
        slack = 2 / min(h, w)  # both sides are rounded to whole pixels
        centred = (top, left) == ((height - h) // 2, (width - w) // 2)
        drawn = scale[0] * 0.8 <= fraction <= scale[1] * 1.2 and 3 / 4 - slack <= ratio <= 4 / 3 + slack
        assert centred or drawn
    # Every try too wide for a 10 x 1000 strip: the centred box of ratio 4/3.
    assert random_resized_crop_box(10, 1000, (0.9, 1.0), g) == (0, 493, 10, 13)


def test_augmented_view_is_a_function_of_the_seed_and_flips_on_its_draw() -> None:
    cfg = OmegaConf.structured(
        MultiCropConfig(
            global_size=16, global_scale=[1.0, 1.0], jitter_p=0.0, grayscale_p=0.0, blur_p=[0.0], flip_p=1.0
        )
    )
    view = AugmentedView(view_specs(cfg)[0], cfg.mean, cfg.std)
    image = torch.arange(3 * 16 * 16, dtype=torch.float32).view(3, 16, 16).remainder(251).to(torch.uint8)
    torch.manual_seed(1)
    out = view(image)
    torch.manual_seed(1)
    assert torch.equal(out, view(image))
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    # Scale 1 and ratio within bounds: the whole square image, flipped (flip_p=1), normalised.
    expected = (image.flip(-1).float() / 255 - mean) / std
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


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
