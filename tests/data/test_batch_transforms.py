"""Batched multi-crop augmentation: determinism, crop geometry, and each op's effect."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torchvision.transforms.v2 import functional as TF

from sslframe.config.schema import MultiCropConfig
from sslframe.data import batch_transforms as bt
from sslframe.data.loader import stack_padded
from sslframe.data.recipe import ViewSpec, crop_boxes, draw_view
from sslframe.data.transforms import AugmentedView


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


def boxes_xyxy(sizes: torch.Tensor, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    top, left, h, w = crop_boxes(sizes, scale, g).unbind(1)
    return torch.stack([left, top, left + w, top + h], dim=1).float()


def test_boxes_follow_the_random_resized_crop_rules() -> None:
    sizes = torch.tensor([[40, 60]] * 2000)
    boxes = boxes_xyxy(sizes, (0.2, 0.6), gen())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.min() > 0.18 and area.max() < 0.62  # rounding of width and height aside
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4


def test_impossible_scale_falls_back_to_a_centred_crop() -> None:
    # A 4 x 100 strip cannot hold a crop of 90% of its area with ratio in [3/4, 4/3].
    boxes = boxes_xyxy(torch.tensor([[4, 100]]), (0.9, 1.0), gen())
    torch.testing.assert_close(boxes, torch.tensor([[47.0, 0.0, 52.0, 4.0]]))


def test_padding_does_not_change_the_crops() -> None:
    g = gen(5)
    small = torch.rand(3, 10, 14, generator=g)
    large = torch.rand(3, 30, 20, generator=g)
    batch, sizes = stack_padded([small, large])
    assert sizes.tolist() == [[10, 14], [30, 20]] and batch.shape == (2, 3, 30, 20)
    boxes = boxes_xyxy(sizes, (0.5, 1.0), gen())
    together = bt.crop_resize(batch, boxes, 8)
    alone = torch.cat([bt.crop_resize(img[None], box[None], 8) for img, box in zip((small, large), boxes, strict=True)])
    torch.testing.assert_close(together, alone)


def spec(**kw: object) -> ViewSpec:
    base = {"size": 16, "scale": (1.0, 1.0), "flip_p": 0.0, "jitter": (0.8, 0.8, 0.8, 0.2), "jitter_p": 1.0,
            "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}  # fmt: skip
    return ViewSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_each_op_does_what_it_says() -> None:
    x = torch.rand(64, 3, 16, 16, generator=gen(1))
    sizes = torch.tensor([[16, 16]] * 64)
    none = draw_view(spec(jitter_p=0.0), sizes, gen())
    torch.testing.assert_close(bt.color_jitter(x, none, spec().jitter), x)
    jittered = bt.color_jitter(x, draw_view(spec(), sizes, gen()), spec().jitter)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, x)
    blurred = bt.gaussian_blur(x, 5, torch.full((64,), 1.0))
    assert blurred.std() < x.std()  # blurring i.i.d. noise lowers its spread
    aug = bt.BatchMultiCrop(config(grayscale_p=1.0, jitter_p=0.0, blur_p=[0.0]))
    view = aug((x * 255).to(torch.uint8), sizes, gen())[0]
    torch.testing.assert_close(view[:, 0], view[:, 1])


def test_hue_rotation_keeps_gray_pixels_gray() -> None:
    gray = torch.full((4, 3, 2, 2), 0.4)
    rotated = bt._rotate_hue(gray, torch.tensor([0.3, 1.0, -2.0, 3.1]))
    torch.testing.assert_close(rotated, gray)


def test_bicubic_crops_are_torchvisions_antialiased_bicubic_resize() -> None:
    """``transform.interpolation=bicubic`` (the DINO, iBOT, DINOv2 and MAE authors' crops): each
    image's crop, enlarged or shrunk, is torchvision's ``resize(..., BICUBIC, antialias=True)`` of
    that 8-bit crop alone (PIL's algorithm, which also saturates between its two passes), up to
    8-bit rounding, in a padded batch of images of several sizes."""
    g = gen(11)
    shapes = [(40, 44), (23, 31), (60, 18)]
    images = [(torch.rand(3, h, w, generator=g) * 255).round().to(torch.uint8) for h, w in shapes]
    batch, _ = stack_padded([image.float() / 255 for image in images])
    # (top, left, height, width): enlarged, shrunk by more than 2, whole image, a thin strip
    crops = [(3, 5, 10, 12), (0, 0, 23, 31), (2, 1, 55, 17)]
    boxes = torch.tensor([[left, top, left + w, top + h] for top, left, h, w in crops], dtype=torch.float32)
    for size in (12, 28):
        together = bt.crop_resize(batch, boxes, size, "bicubic")
        for i, (image, (top, left, h, w)) in enumerate(zip(images, crops, strict=True)):
            crop = image[:, top : top + h, left : left + w]
            expected = TF.resize(crop, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
            torch.testing.assert_close(together[i], expected.float() / 255, rtol=0, atol=1.5 / 255)
    bilinear = bt.crop_resize(batch, boxes, 12)
    assert (bilinear - bt.crop_resize(batch, boxes, 12, "bicubic")).abs().max() > 0.05, "a different kernel"


def test_executors_agree_on_bicubic_crops() -> None:
    """With real crops (enlarged from 30-100% of the image) and ``interpolation=bicubic``, the
    per-image executor (torchvision on the uint8 image, in the loader workers) and the batched one
    (float, the whole batch) give the same views up to 8-bit rounding. (Bilinear crops differ at
    their borders: ``roi_align`` reads the pixels beyond a crop's edge, torchvision's resize of
    the cut-out crop cannot.)"""
    g = gen(12)
    images = (torch.rand(16, 3, 20, 20, generator=g) * 255).round().to(torch.uint8)
    sizes = torch.tensor([[20, 20]] * 16)
    view = spec(size=24, scale=(0.3, 1.0), jitter_p=0.0, interpolation="bicubic")
    draws = draw_view(view, sizes, g)
    batched = bt.BatchMultiCrop(config(interpolation="bicubic")).apply(images.float() / 255, view, draws)
    per_image = AugmentedView(view, [0.0] * 3, [1.0] * 3)
    for i in range(len(images)):
        torch.testing.assert_close(per_image.apply(images[i], draws, i), batched[i], rtol=0, atol=1.5 / 255)


def test_per_image_and_batched_executors_make_the_same_views_from_the_same_draws() -> None:
    """One recipe (``recipe.draw_view``), two executors: the loader workers' per-image one and
    the training process's batched one. With whole-image crops at the image's own size (where
    neither resize changes a pixel), the same draws give the same views: jitter in each image's
    drawn order, grayscale, blur with its sigma, solarisation at 128/255 (they once disagreed on
    the threshold and on the hue angle's sign)."""
    g = gen(7)
    images = (torch.rand(12, 3, 16, 16, generator=g) * 255).round().to(torch.uint8)
    images[:, :, 0, 0] = 128  # exactly at torchvision's solarisation threshold: inverted
    sizes = torch.tensor([[16, 16]] * 12)
    view = spec(flip_p=0.5, grayscale_p=0.3, blur_p=0.5, solarize_p=0.5)
    draws = draw_view(view, sizes, g)
    assert draws.jitter.all() and draws.gray.any() and draws.blur.any() and draws.solarize.any()
    assert len({tuple(o) for o in draws.order.tolist()}) > 1, "several jitter orders are exercised"
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    cfg = config(mean=mean, std=std)
    batched = bt.BatchMultiCrop(cfg).apply(images.float() / 255, view, draws)
    per_image = AugmentedView(view, mean, std)
    for i in range(len(images)):
        torch.testing.assert_close(per_image.apply(images[i], draws, i), batched[i], rtol=0, atol=2e-5)
