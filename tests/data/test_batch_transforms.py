"""Batched multi-crop augmentation: determinism, crop geometry, and each op's effect."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from sslframe.config.schema import MultiCropConfig
from sslframe.data import batch_transforms as bt
from sslframe.data.loader import stack_padded


def config(**kw: object) -> MultiCropConfig:
    base = {"global_size": 12, "local_size": 6, "local_crops": 3, "mean": [0, 0, 0], "std": [1, 1, 1]}
    return OmegaConf.structured(MultiCropConfig(**{**base, **kw}))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_views_shapes_and_determinism() -> None:
    images = torch.randint(0, 256, (5, 3, 20, 24), dtype=torch.uint8)
    sizes = torch.tensor([[20, 24]] * 5)
    aug = bt.BatchMultiCrop(config(blur_p=[1.0, 0.1], solarize_p=[0.0, 0.2]))
    a, b = aug(images, sizes, gen(3)), aug(images, sizes, gen(3))
    assert [tuple(v.shape) for v in a] == [(5, 3, 12, 12)] * 2 + [(5, 3, 6, 6)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], aug(images, sizes, gen(4))[0])


def test_boxes_follow_the_random_resized_crop_rules() -> None:
    sizes = torch.tensor([[40, 60]] * 2000)
    boxes = bt.resized_crop_boxes(sizes, (0.2, 0.6), gen())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.min() > 0.18 and area.max() < 0.62  # rounding of width and height aside
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4


def test_impossible_scale_falls_back_to_a_centred_crop() -> None:
    # A 4 x 100 strip cannot hold a crop of 90% of its area with ratio in [3/4, 4/3].
    boxes = bt.resized_crop_boxes(torch.tensor([[4, 100]]), (0.9, 1.0), gen())
    torch.testing.assert_close(boxes, torch.tensor([[47.0, 0.0, 52.0, 4.0]]))


def test_padding_does_not_change_the_crops() -> None:
    g = gen(5)
    small = torch.rand(3, 10, 14, generator=g)
    large = torch.rand(3, 30, 20, generator=g)
    batch, sizes = stack_padded([small, large])
    assert sizes.tolist() == [[10, 14], [30, 20]] and batch.shape == (2, 3, 30, 20)
    boxes = bt.resized_crop_boxes(sizes, (0.5, 1.0), gen())
    together = bt.crop_resize(batch, boxes, 8)
    alone = torch.cat([bt.crop_resize(img[None], box[None], 8) for img, box in zip((small, large), boxes, strict=True)])
    torch.testing.assert_close(together, alone)


def test_each_op_does_what_it_says() -> None:
    x = torch.rand(64, 3, 16, 16, generator=gen(1))
    torch.testing.assert_close(bt.color_jitter(x, [0.8, 0.8, 0.8, 0.2], 0.0, gen()), x)
    jittered = bt.color_jitter(x, [0.8, 0.8, 0.8, 0.2], 1.0, gen())
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, x)
    blurred = bt.gaussian_blur(x, 5, 1.0, gen())
    assert blurred.std() < x.std()  # blurring i.i.d. noise lowers its spread
    solarized = bt.solarize(x, 1.0, gen())
    torch.testing.assert_close(solarized, torch.where(x >= 128 / 255, 1 - x, x))  # torchvision: 128 on uint8
    aug = bt.BatchMultiCrop(config(grayscale_p=1.0, jitter_p=0.0, blur_p=[0.0]))
    view = aug((x * 255).to(torch.uint8), torch.tensor([[16, 16]] * 64), gen())[0]
    torch.testing.assert_close(view[:, 0], view[:, 1])


def test_hue_rotation_keeps_gray_pixels_gray() -> None:
    gray = torch.full((4, 3, 2, 2), 0.4)
    rotated = bt._rotate_hue(gray, torch.tensor([0.3, 1.0, -2.0, 3.1]))
    torch.testing.assert_close(rotated, gray)


def test_batched_and_per_image_colour_ops_agree_on_the_same_parameters() -> None:
    """The per-batch executor and the per-image one (``sslframe.data.colour``, used by the loader
    workers) give the same view from the same draws: a hue factor turns the same way, and the
    solarisation threshold is the same (they once differed in both)."""
    from sslframe.data import colour

    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 8, 8, generator=g)
    images[:, :, 0, 0] = 128 / 255  # exactly at torchvision's threshold: inverted
    factors = torch.tensor([-0.3, -0.05, 0.1, 0.45])
    batched = bt._rotate_hue(images, colour.hue_angle(factors)).clamp(0, 1)
    for image, factor, out in zip(images, factors.tolist(), batched, strict=True):
        torch.testing.assert_close(out, colour.adjust_hue(image, factor), rtol=0, atol=1e-6)
    solarized = bt.solarize(images, 1.0, torch.Generator())
    for image, out in zip(images, solarized, strict=True):
        assert torch.equal(out, colour.solarize(image))
    assert torch.allclose(solarized[:, :, 0, 0], torch.tensor(1 - 128 / 255))
