"""Multi-crop augmentation of a whole batch at once, on the CPU or the GPU.

The per-sample pipeline (``transforms.MultiCropTransform``) pays Python overhead for every op of
every view of every image; on small images that overhead dominates. Here each op runs once per
batch: random resized crops for all images and views with one ``roi_align`` call per crop size
(bilinear, averaging several samples per output pixel when shrinking), and flips, colour jitter,
grayscale, Gaussian blur and solarisation as per-image masked tensor ops. The recipe and its
probabilities are those of the per-sample pipeline (SimCLR appendix A; SwAV multi-crop), with two
simplifications: the four jitter ops run in a fixed order (brightness, contrast, saturation, hue)
rather than a random one, and hue is rotated in YIQ space (``hue_space=hsv``: torchvision's HSV
shift, one image at a time).

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


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _bernoulli(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def resized_crop_boxes(
    sizes: torch.Tensor, scale: tuple[float, float], g: torch.Generator, attempts: int = 10
) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) following torchvision's RandomResizedCrop sampling: area fraction in
    ``scale``, log-uniform aspect ratio in [3/4, 4/3], up to ``attempts`` tries, then a centre crop."""
    n = sizes.shape[0]
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    area = (h * w)[:, None]
    target = area * (torch.rand(n, attempts, generator=g, dtype=torch.float64) * (scale[1] - scale[0]) + scale[0])
    log_ratio = torch.rand(n, attempts, generator=g, dtype=torch.float64) * (2 * math.log(4 / 3)) - math.log(4 / 3)
    ratio = log_ratio.exp()
    cw = (target * ratio).sqrt().round()
    ch = (target / ratio).sqrt().round()
    ok = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    cw, ch = cw.gather(1, pick)[:, 0], ch.gather(1, pick)[:, 0]
    # Fallback (no valid try): the largest centred crop with a ratio inside [3/4, 4/3].
    in_ratio = w / h
    fw = torch.where(in_ratio < 3 / 4, w, torch.where(in_ratio > 4 / 3, (h * 4 / 3).round(), w))
    fh = torch.where(in_ratio < 3 / 4, (w / (3 / 4)).round(), torch.where(in_ratio > 4 / 3, h, h))
    fallback = first < 0
    cw, ch = torch.where(fallback, fw, cw), torch.where(fallback, fh, ch)
    x1 = torch.where(
        fallback, ((w - cw) / 2).floor(), (torch.rand(n, generator=g, dtype=torch.float64) * (w - cw + 1)).floor()
    )
    y1 = torch.where(
        fallback, ((h - ch) / 2).floor(), (torch.rand(n, generator=g, dtype=torch.float64) * (h - ch + 1)).floor()
    )
    return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1).float()


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i of image i and resize it to size x size (bilinear, several samples per output
    pixel when shrinking, as an anti-aliased resize would)."""
    rois = torch.cat([torch.arange(x.shape[0], device=x.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1).to(a.device), a, b)


def _factor(n: int, amount: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return _uniform(n, max(0.0, 1 - amount), 1 + amount, g).to(device).view(-1, 1, 1, 1)


def color_jitter(
    x: torch.Tensor, amounts: list[float], p: float, g: torch.Generator, hue_space: str = "yiq"
) -> torch.Tensor:
    n, device = x.shape[0], x.device
    brightness, contrast, saturation, hue = amounts
    apply = _bernoulli(n, p, g)
    out = x
    if brightness > 0:
        out = (out * _factor(n, brightness, g, device)).clamp(0, 1)
    if contrast > 0:
        mean = _gray(out).mean((2, 3), keepdim=True)
        out = ((out - mean) * _factor(n, contrast, g, device) + mean).clamp(0, 1)
    if saturation > 0:
        gray = _gray(out)
        out = ((out - gray) * _factor(n, saturation, g, device) + gray).clamp(0, 1)
    if hue > 0:
        shift = _uniform(n, -hue, hue, g)
        if hue_space == "hsv":
            out = torch.stack([TF.adjust_hue(image, float(f)) for image, f in zip(out, shift)])
        else:
            out = _rotate_hue(out, hue_angle(shift).to(device)).clamp(0, 1)
    return _select(apply, out, x)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by ``angle`` (per image)."""
    matrix = hue_rotation(angle.to(x.dtype))  # n x 3 x 3
    return torch.einsum("nij,njhw->nihw", matrix, x)


def gaussian_blur(x: torch.Tensor, kernel: int, p: float, g: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur, sigma ~ U(0.1, 2.0) per image, applied with probability ``p``."""
    n, c, h, w = x.shape
    apply = _bernoulli(n, p, g)
    sigma = _uniform(n, 0.1, 2.0, g).to(x.device, x.dtype)
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
    return _select(apply, y.view(n, c, h, w), x)


def solarize(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Solarisation (the per-image pipeline's threshold, 128/255) of each image with probability ``p``."""
    apply = _bernoulli(x.shape[0], p, g)
    return _select(apply, colour.solarize(x), x)


class BatchMultiCrop:
    """``global_crops`` large and ``local_crops`` small augmented views of every image of a batch.

    ``images`` is a uint8 batch (N x 3 x H x W), padded by ``loader.stack_padded`` when images
    differ in size, and ``sizes`` holds each image's own (height, width); boxes lie inside each
    image, and the edge-replicating padding makes border samples what they would be unpadded.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def _view(
        self,
        x: torch.Tensor,
        sizes: torch.Tensor,
        size: int,
        scale: Any,
        blur_p: float,
        sol_p: float,
        g: torch.Generator,
    ) -> torch.Tensor:
        cfg = self.cfg
        n = x.shape[0]
        boxes = resized_crop_boxes(sizes.cpu(), tuple(scale), g).to(x.device)
        out = crop_resize(x, boxes, size)
        out = _select(_bernoulli(n, cfg.flip_p, g), out.flip(-1), out)
        jitter = [f * cfg.jitter_strength for f in cfg.jitter]
        if cfg.jitter_p > 0 and any(jitter):
            out = color_jitter(out, jitter, cfg.jitter_p, g, cfg.hue_space)
        if cfg.grayscale_p > 0:
            out = _select(_bernoulli(n, cfg.grayscale_p, g), _gray(out).expand_as(out), out)
        if blur_p > 0:
            out = gaussian_blur(out, max(3, int(0.1 * size) // 2 * 2 + 1), blur_p, g)
        if sol_p > 0:
            out = solarize(out, sol_p, g)
        mean = torch.tensor(cfg.mean, device=x.device, dtype=out.dtype).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=x.device, dtype=out.dtype).view(1, 3, 1, 1)
        return (out - mean) / std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, sizes: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        cfg = self.cfg
        x = images.float() / 255.0
        views = [
            self._view(
                x,
                sizes,
                cfg.global_size,
                cfg.global_scale,
                cfg.blur_p[i % len(cfg.blur_p)],
                cfg.solarize_p[i % len(cfg.solarize_p)],
                g,
            )
            for i in range(cfg.global_crops)
        ]
        views += [
            self._view(x, sizes, cfg.local_size, cfg.local_scale, cfg.local_blur_p, cfg.local_solarize_p, g)
            for _ in range(cfg.local_crops)
        ]
        return views
