"""Multi-crop augmentation of a whole batch at once, on the CPU or the GPU.

The per-sample pipeline (``transforms.MultiCropTransform``) pays Python overhead for every op of
every view of every image; on small images that overhead dominates. Here each op runs once per
batch on the same draws (``recipe.draw_view``, for every image of the batch at once): the random
resized crops of all images with one ``roi_align`` call per view (bilinear, averaging several
samples per output pixel when shrinking; ``transform.interpolation=bicubic``: torchvision's
antialiased bicubic resize as two batched matrix products), then flips, colour jitter in each
image's drawn order, grayscale, Gaussian blur and solarisation as per-image masked tensor ops. Hue
is rotated in YIQ (``hue_space=hsv``: torchvision's HSV shift, one image at a time).

Random parameters come from a ``torch.Generator`` the caller seeds per (seed, step, rank), so a
batch's augmentation is a pure function of its position and a resumed run repeats it exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from sslframe.data import colour
from sslframe.data.colour import LUMA, hue_angle, hue_rotation
from sslframe.data.recipe import ViewDraws, ViewSpec, draw_view, view_specs


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Crop box i (x0, y0, x1, y1 in pixel edges) of image i and resize it to size x size, with
    several samples per output pixel when shrinking, as an anti-aliased resize would. Bilinear:
    ``roi_align``; bicubic: :func:`_bicubic_crop_resize` (torchvision's antialiased bicubic)."""
    if interpolation == "bicubic":
        return _bicubic_crop_resize(x, boxes, size)
    rois = torch.cat([torch.arange(x.shape[0], device=x.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """The bicubic convolution kernel with a = -0.5 (Keys 1981), PIL's and torchvision's."""
    a = -0.5
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _bicubic_weights(start: torch.Tensor, length: torch.Tensor, size: int, total: int) -> torch.Tensor:
    """``(n, size, total)``: row o of image i holds the weights that PIL's antialiased bicubic resize
    (torchvision's ``antialias=True``) gives the pixels of ``[start_i, start_i + length_i)`` (one
    axis of image i's crop) for output pixel o: the kernel widened by the shrink factor, taps
    clipped to the crop and normalised."""
    n = start.shape[0]
    dtype = torch.float64
    start, length = start.to(dtype), length.to(dtype)
    scale = length / size
    widen = scale.clamp(min=1.0)
    support = 2.0 * widen
    centre = (torch.arange(size, device=start.device, dtype=dtype) + 0.5)[None] * scale[:, None]
    low = (centre - support[:, None] + 0.5).trunc().clamp(min=0)
    high = torch.minimum((centre + support[:, None] + 0.5).trunc(), length[:, None])
    taps = math.ceil(2 * float(support.max())) + 2
    pos = low[..., None] + torch.arange(taps, device=start.device, dtype=dtype)
    w = _cubic((pos - centre[..., None] + 0.5) / widen[:, None, None])
    w = torch.where(pos < high[..., None], w, torch.zeros_like(w))
    w = w / w.sum(-1, keepdim=True)
    index = (pos + start[:, None, None]).clamp(max=total - 1).long()
    return torch.zeros(n, size, total, device=start.device, dtype=dtype).scatter_add_(2, index, w)


def _bicubic_crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic crop and resize of every image at once, as torchvision's antialiased bicubic resize
    of each crop (PIL's algorithm): one weight matrix per image and axis, two batched matrix
    products, each clamped to [0, 1] as an 8-bit resize saturates after each pass. Boxes are
    whole pixels."""
    _, _, height, width = x.shape
    x0, y0, x1, y1 = boxes.double().unbind(1)
    rows = _bicubic_weights(y0, y1 - y0, size, height).to(x.dtype)
    cols = _bicubic_weights(x0, x1 - x0, size, width).to(x.dtype)
    # Across, clamped, then down: the order and the saturation in between of PIL's 8-bit resize.
    across = (x @ cols[:, None].transpose(-1, -2)).clamp(0, 1)
    return (rows[:, None] @ across).clamp(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1).to(a.device), a, b)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


def color_jitter(x: torch.Tensor, draws: ViewDraws, amounts: Any, hue_space: str = "yiq") -> torch.Tensor:
    """Brightness, contrast, saturation and hue (torchvision's definitions, clamped after each op)
    with each image's drawn factors, in each image's drawn order, where its jitter is drawn."""
    factors = draws.factors.to(x.device)
    out = x
    for position in range(4):
        for op in range(4):
            chosen = draws.order[:, position] == op  # on the host, with the draws
            if amounts[op] <= 0 or not bool(chosen.any()):
                continue
            f = _per_image(factors[:, op], out)
            if op == 0:
                changed = (out * f).clamp(0, 1)
            elif op == 1:
                mean = _gray(out).mean((2, 3), keepdim=True)
                changed = ((out - mean) * f + mean).clamp(0, 1)
            elif op == 2:
                gray = _gray(out)
                changed = ((out - gray) * f + gray).clamp(0, 1)
            elif hue_space == "hsv":
                changed = torch.stack(
                    [TF.adjust_hue(image, float(v)) for image, v in zip(out, factors[:, 3], strict=True)]
                )
            else:
                changed = _rotate_hue(out, hue_angle(factors[:, 3]).to(out.dtype)).clamp(0, 1)
            out = _select(chosen, changed, out)
    return _select(draws.jitter, out, x)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by ``angle`` (per image)."""
    matrix = hue_rotation(angle.to(x.dtype))  # n x 3 x 3
    return torch.einsum("nij,njhw->nihw", matrix, x)


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each image with its own ``sigma``, reflected borders (as the
    per-image ``transforms.gaussian_blur``)."""
    n, c, h, w = x.shape
    sigma = sigma.to(x.device, x.dtype)
    half = kernel // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # n x kernel
    k = torch.where(k < 1e-12, 0.0, k)  # no subnormal weights (slow, and worth nothing)
    k = k.repeat_interleave(c, 0)  # (n*c) x kernel
    y = x.reshape(1, n * c, h, w)
    pad = min(half, h - 1, w - 1)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect") if pad > 0 else y
    if pad < half:
        y = F.pad(y, (half - pad,) * 4, mode="replicate")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel, 1), groups=n * c)
    return y.view(n, c, h, w)


class BatchMultiCrop:
    """The recipe's views (``recipe.view_specs``: global then local crops) of every image of a batch.

    ``images`` is a uint8 batch (N x 3 x H x W), padded by ``loader.stack_padded`` when images
    differ in size, and ``sizes`` holds each image's own (height, width); boxes lie inside each
    image, and the edge-replicating padding makes border samples what they would be unpadded.
    """

    def __init__(self, cfg: Any) -> None:
        self.specs = view_specs(cfg)
        self.hue_space = cfg.hue_space
        self.mean = torch.tensor(list(cfg.mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(cfg.std), dtype=torch.float32).view(1, 3, 1, 1)

    def apply(self, x: torch.Tensor, spec: ViewSpec, draws: ViewDraws) -> torch.Tensor:
        """One view of float images ``x`` (N x 3 x H x W in [0, 1]) from its draws."""
        top, left, h, w = draws.boxes.unbind(1)
        boxes = torch.stack([left, top, left + w, top + h], dim=1).to(x.device, x.dtype)
        out = crop_resize(x, boxes, spec.size, spec.interpolation)
        out = _select(draws.flip, out.flip(-1), out)
        if spec.jitter_p > 0 and any(spec.jitter):
            out = color_jitter(out, draws, spec.jitter, self.hue_space)
        if spec.grayscale_p > 0:
            out = _select(draws.gray, _gray(out).expand_as(out), out)
        if spec.blur_p > 0:
            out = _select(draws.blur, gaussian_blur(out, spec.blur_kernel, draws.sigma), out)
        if spec.solarize_p > 0:
            out = _select(draws.solarize, colour.solarize(out), out)
        return (out - self.mean.to(out.device)) / self.std.to(out.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, sizes: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        x = images.float() / 255.0
        return [self.apply(x, spec, draw_view(spec, sizes.cpu(), g)) for spec in self.specs]
