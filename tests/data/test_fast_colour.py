"""The fused float colour ops of the per-sample pipeline against torchvision's, and the pipeline."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.transforms.v2 import functional as TF

from sslframe.config.schema import MultiCropConfig
from sslframe.data import colour
from sslframe.data.recipe import ViewSpec, draw_view
from sslframe.data.transforms import MultiCropTransform, PhotometricAugment

ONE_LEVEL = 1 / 255


def random_image(seed: int = 0, size: tuple[int, int] = (40, 56)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8).float() / 255


@pytest.mark.parametrize("factor", [0.0, 0.4, 1.0, 1.8])
def test_brightness_contrast_saturation_match_torchvision(factor: float) -> None:
    x = random_image()
    for ours, theirs in [
        (colour.adjust_brightness, TF.adjust_brightness),
        (colour.adjust_contrast, TF.adjust_contrast),
        (colour.adjust_saturation, TF.adjust_saturation),
    ]:
        torch.testing.assert_close(ours(x, factor), theirs(x, factor), atol=ONE_LEVEL, rtol=0)


def test_grayscale_and_solarize_match_torchvision() -> None:
    x = random_image(1)
    gray = colour.grayscale(x)
    assert gray.shape == (1, *x.shape[1:])
    torch.testing.assert_close(gray.expand_as(x), TF.rgb_to_grayscale(x, 3), atol=ONE_LEVEL, rtol=0)
    as_uint8 = (x * 255).round().to(torch.uint8)
    expected = TF.solarize(as_uint8, 128).float() / 255  # the uint8 recipe: RandomSolarize(128)
    torch.testing.assert_close(colour.solarize(x), expected, atol=ONE_LEVEL, rtol=0)


def test_hue_zero_is_the_identity_and_gray_stays_gray() -> None:
    x = random_image(2)
    assert torch.equal(colour.adjust_hue(x, 0.0), x)
    gray = colour.grayscale(x).expand_as(x).contiguous()
    torch.testing.assert_close(colour.adjust_hue(gray, 0.3), gray, atol=1e-6, rtol=0)


@pytest.mark.parametrize("factor", [0.01, -0.02, 0.05])
def test_small_hue_shifts_move_colours_like_torchvision(factor: float) -> None:
    """YIQ rotation vs HSV shift: not the same map, so compare the change each makes. HSV moves
    only the middle channel of a pixel and YIQ turns all three about the luma axis, so on random
    colours the two changes agree in size (norm ratio 0.97-1.01 measured) and direction up to a
    cosine of ~0.68-0.73 (1 would be identical maps; a shift the other way round gives -0.67)."""
    x = random_image(3)
    ours = (colour.adjust_hue(x, factor) - x).flatten()
    theirs = (TF.adjust_hue(x, factor) - x).flatten()
    assert 0.9 < ours.norm() / theirs.norm() < 1.1
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.6


def augment(hue_space: str = "yiq", **kwargs: object) -> tuple[PhotometricAugment, ViewSpec]:
    settings = {
        "size": 16,
        "scale": (1.0, 1.0),
        "flip_p": 0.0,
        "jitter": (0.8, 0.8, 0.8, 0.2),
        "jitter_p": 0.8,
        "grayscale_p": 0.2,
        "blur_p": 0.5,
        "solarize_p": 0.2,
    } | kwargs
    spec = ViewSpec(**settings)  # type: ignore[arg-type]
    return PhotometricAugment(spec, [0.5] * 3, [0.25] * 3, hue_space), spec


def photometric(transform: tuple[PhotometricAugment, ViewSpec], x: torch.Tensor) -> torch.Tensor:
    """One draw of the view (torch's default generator, as in a loader worker) applied to ``x``."""
    op, spec = transform
    return op(x, draw_view(spec, torch.tensor([x.shape[-2:]])))


def test_photometric_augment_without_randomness_is_convert_and_normalise() -> None:
    x = (random_image(4) * 255).round().to(torch.uint8)
    out = photometric(augment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0), x)
    expected = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), [0.5] * 3, [0.25] * 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    gray = photometric(augment(jitter_p=0.0, grayscale_p=1.0, blur_p=0.0, solarize_p=0.0), x)
    assert gray.shape == x.shape and torch.equal(gray[0], gray[2])


def test_photometric_augment_is_a_function_of_the_seed() -> None:
    x = (random_image(5) * 255).round().to(torch.uint8)
    transform = augment()
    torch.manual_seed(11)
    first = [photometric(transform, x) for _ in range(6)]
    torch.manual_seed(11)
    again = [photometric(transform, x) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({a.sum().item() for a in first}) > 1


def test_multicrop_views_have_the_recipe_shapes_and_dtype() -> None:
    cfg = OmegaConf.structured(MultiCropConfig(global_size=32, local_size=16, local_crops=3, solarize_p=[0.0, 0.2]))
    image = (random_image(6, (48, 60)) * 255).round().to(torch.uint8)
    torch.manual_seed(3)
    views = MultiCropTransform(cfg)(image)
    assert [v.shape for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(views, MultiCropTransform(cfg)(image), strict=True))


def test_hsv_hue_space_is_torchvisions_hue_shift() -> None:
    """``transform.hue_space=hsv``: the hue shift drawn for the view (``ViewDraws.factors[:, 3]``)
    applied by torchvision's own adjust_hue; the YIQ path turns by the same draw differently."""
    x = (random_image(7) * 255).round().to(torch.uint8)
    hue_only = {"jitter": (0.0, 0.0, 0.0, 0.2), "jitter_p": 1.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
    (op, spec), (op_hsv, _) = augment(**hue_only), augment("hsv", **hue_only)
    draws = draw_view(spec, torch.tensor([x.shape[-2:]]), torch.Generator().manual_seed(5))
    factor = float(draws.factors[0, 3])
    assert -0.2 <= factor <= 0.2
    out = op_hsv(x, draws)
    expected = TF.normalize(TF.adjust_hue(x.float() / 255, factor), [0.5] * 3, [0.25] * 3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(op(x, draws), out, atol=1e-3), "the YIQ path differs from HSV"


def test_batch_backend_hsv_hue_matches_torchvision_per_image() -> None:
    from sslframe.data.batch_transforms import color_jitter

    x = torch.stack([random_image(s) for s in range(4)])
    view = ViewSpec(8, (1.0, 1.0), 0.0, (0.0, 0.0, 0.0, 0.3), 1.0, 0.0, 0.0, 0.0)
    draws = draw_view(view, torch.tensor([[8, 8]] * 4), torch.Generator().manual_seed(2))
    out = color_jitter(x, draws, view.jitter, hue_space="hsv")
    shifts = draws.factors[:, 3].tolist()
    expected = torch.stack([TF.adjust_hue(image, f) for image, f in zip(x, shifts, strict=True)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
