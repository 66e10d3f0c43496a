"""The augmentation recipe, drawn in one place (docs/architecture.md, principle 9).

The SimCLR set (Chen et al. 2020, appendix A) and SwAV's multi-crop (Caron et al. 2020): for
each view, a random resized crop (torchvision's RandomResizedCrop sampling), a horizontal flip,
colour jitter in a random order with probability ``jitter_p``, grayscale, Gaussian blur (sigma
in [0.1, 2]) and solarisation. ``view_specs`` turns the ``transform`` config into one spec per
view and ``draw_view`` draws a view's parameters for n images at once; the two executors (per
image in the loader workers, ``transforms.AugmentedView``, and per batch in the training
process, ``batch_transforms.BatchMultiCrop``) apply the same draws, so they make the same views
up to their resize kernels (``tests/data/test_batch_transforms.py`` compares them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# Blur sigma range of the SimCLR recipe.
SIGMA = (0.1, 2.0)
# RandomResizedCrop's aspect-ratio range and number of tries.
RATIO = (3 / 4, 4 / 3)
TRIES = 10


@dataclass(frozen=True)
class ViewSpec:
    """One view of the recipe: its output side, crop scale and the probabilities of its ops."""

    size: int
    scale: tuple[float, float]
    flip_p: float
    # brightness, contrast, saturation, hue amounts (jitter_strength applied)
    jitter: tuple[float, float, float, float]
    jitter_p: float
    grayscale_p: float
    blur_p: float
    solarize_p: float
    # how the crop is resized to ``size``: "bilinear" or "bicubic"
    interpolation: str = "bilinear"

    @property
    def blur_kernel(self) -> int:
        """About 10% of the view's side, odd, at least 3 (SimCLR's kernel)."""
        return max(3, int(0.1 * self.size) // 2 * 2 + 1)


def view_specs(cfg: Any) -> list[ViewSpec]:
    """The ``transform`` config's views: ``global_crops`` global ones (blur and solarisation
    probabilities cycled over them, BYOL's asymmetric views), then ``local_crops`` local ones."""
    jitter = tuple(float(f) * cfg.jitter_strength for f in cfg.jitter)

    def spec(size: int, scale: Any, blur_p: float, solarize_p: float) -> ViewSpec:
        return ViewSpec(
            int(size), (float(scale[0]), float(scale[1])), float(cfg.flip_p), jitter,  # type: ignore[arg-type]
            float(cfg.jitter_p), float(cfg.grayscale_p), float(blur_p), float(solarize_p),
            str(cfg.interpolation),
        )  # fmt: skip

    views = [
        spec(
            cfg.global_size, cfg.global_scale, cfg.blur_p[i % len(cfg.blur_p)], cfg.solarize_p[i % len(cfg.solarize_p)]
        )
        for i in range(cfg.global_crops)
    ]
    local = spec(cfg.local_size, cfg.local_scale, cfg.local_blur_p, cfg.local_solarize_p)
    return views + [local] * cfg.local_crops


@dataclass
class ViewDraws:
    """A view's random parameters for n images (row i is image i's)."""

    # top, left, height, width of each crop, in pixels (float64 holding whole numbers)
    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    # brightness, contrast and saturation factors, then the hue shift (a fraction of a turn)
    factors: torch.Tensor
    # the order of the four jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue)
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor


def crop_boxes(sizes: torch.Tensor, scale: tuple[float, float], g: torch.Generator | None) -> torch.Tensor:
    """(top, left, height, width) of a random resized crop of each image (``sizes``: n x (h, w)),
    torchvision's RandomResizedCrop sampling: area fraction in ``scale``, log-uniform aspect ratio
    in [3/4, 4/3], up to 10 tries, then the largest centred crop with an allowed ratio."""
    n = sizes.shape[0]
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    u = torch.rand(n, TRIES, 2, generator=g, dtype=torch.float64)
    target = (h * w)[:, None] * (scale[0] + u[..., 0] * (scale[1] - scale[0]))
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    ratio = (log_low + u[..., 1] * (log_high - log_low)).exp()
    cw = (target * ratio).sqrt().round()
    ch = (target / ratio).sqrt().round()
    ok = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = ok.float().argmax(1, keepdim=True)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    in_ratio = w / h
    fw = torch.where(in_ratio > RATIO[1], (h * RATIO[1]).round(), w)
    fh = torch.where(in_ratio < RATIO[0], (w / RATIO[0]).round(), h)
    fallback = ~ok.any(1)
    cw, ch = torch.where(fallback, fw, cw), torch.where(fallback, fh, ch)
    place = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = torch.where(fallback, ((h - ch) / 2).floor(), (place[:, 0] * (h - ch + 1)).floor())
    left = torch.where(fallback, ((w - cw) / 2).floor(), (place[:, 1] * (w - cw + 1)).floor())
    return torch.stack([top, left, ch, cw], dim=1)


def draw_view(spec: ViewSpec, sizes: torch.Tensor, g: torch.Generator | None = None) -> ViewDraws:
    """Every random choice of one view for n images (``sizes``: n x (height, width)), from ``g``
    (torch's default generator when None: the loader seeds it per sample). A fixed number of
    draws whatever is applied, so one op's probability never shifts another's randomness."""
    n = sizes.shape[0]
    boxes = crop_boxes(sizes, spec.scale, g)
    u = torch.rand(n, 10, generator=g, dtype=torch.float64)
    amounts = torch.tensor(spec.jitter, dtype=torch.float64)
    low = torch.cat([(1 - amounts[:3]).clamp(min=0), -amounts[3:]])
    high = torch.cat([1 + amounts[:3], amounts[3:]])
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    return ViewDraws(
        boxes=boxes,
        flip=u[:, 0] < spec.flip_p,
        jitter=(u[:, 1] < spec.jitter_p) & bool((amounts > 0).any()),
        factors=low + u[:, 2:6] * (high - low),
        order=order,
        gray=u[:, 6] < spec.grayscale_p,
        blur=u[:, 7] < spec.blur_p,
        sigma=SIGMA[0] + u[:, 8] * (SIGMA[1] - SIGMA[0]),
        solarize=u[:, 9] < spec.solarize_p,
    )
