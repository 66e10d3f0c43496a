"""The ``transform`` group: the multi-crop augmentation recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sslframe.registry import Choices


@dataclass
class MultiCropConfig:
    """Multi-crop views (SwAV) with the SimCLR augmentation set; probabilities per view.

    ``blur_p`` and ``solarize_p`` are lists cycled over the global crops (BYOL-style
    asymmetric views use two values); local crops use ``local_blur_p``/``local_solarize_p``.
    """

    name: str = "multicrop"
    # "sample": torchvision v2 per image in the loader workers; "batch": the same recipe on whole
    # batches in the training process (CPU or GPU), far cheaper for small images.
    backend: str = "sample"
    # Image decoding: torchvision.io (libjpeg-turbo; PIL for formats it lacks) or PIL only.
    decoder: str = "torchvision"
    global_crops: int = 2
    global_size: int = 224
    global_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    local_crops: int = 6
    local_size: int = 96
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    # How crops are resized: "bilinear" (torchvision's default; SimCLR, MoCo, BYOL, SwAV) or
    # "bicubic" (the DINO, iBOT, DINOv2 and MAE authors' RandomResizedCrop).
    interpolation: str = "bilinear"
    flip_p: float = 0.5
    jitter_strength: float = 1.0
    # Brightness, contrast, saturation, hue factors, each multiplied by jitter_strength.
    jitter: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])
    # Hue jitter: "yiq" rotates the chroma plane (one 3 x 3 matrix per view, ~100x cheaper);
    # "hsv" is torchvision's exact HSV hue shift (the papers' recipe, ~14 ms per 224 px crop).
    hue_space: str = "yiq"
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: list[float] = field(default_factory=lambda: [0.5])
    local_blur_p: float = 0.5
    solarize_p: list[float] = field(default_factory=lambda: [0.0])
    local_solarize_p: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    choices: ClassVar[Choices] = {
        "backend": ("sample", "batch"),
        "decoder": ("torchvision", "pil"),
        "hue_space": ("yiq", "hsv"),
        "interpolation": ("bilinear", "bicubic"),
    }
