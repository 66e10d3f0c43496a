"""Images per second per loader worker: our decode + multi-crop pipeline vs the PIL one.

    python bench/data_pipeline.py [--images 64] [--side 256] [--repeats 5]

The SwAV recipe (2x224 + 6x96 crops, SimCLR colour distortion, blur) on the same real JPEGs,
one process, one thread (what one DataLoader worker does), side by side in one run:

- ours: torchvision.io decoding (libjpeg-turbo) to uint8 tensors, crop and flip with torchvision
  transforms v2 on uint8, then one conversion to float and the colour ops, blur and normalisation
  fused in float32, hue rotated in YIQ (sslframe.data.transforms.MultiCropTransform), and the
  same with ``transform.hue_space=hsv`` (torchvision's exact HSV hue shift);
- PIL + torchvision transforms v1, as other SSL frameworks (VISSL, solo-learn, lightly) do:
  PIL open, RandomResizedCrop, flip, ColorJitter, RandomGrayscale, PIL Gaussian blur, ToTensor,
  Normalize on PIL images.

The JPEGs are Fashion-MNIST images (data/fashion_mnist when present) upscaled to ``--side``
pixels, or generated smooth colour fields when it is absent. Reported: the median over repeats.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import quick_mode, write_results

FASHION = Path(__file__).resolve().parents[1] / "data" / "fashion_mnist" / "train"


def make_jpegs(count: int, side: int) -> list[bytes]:
    """``count`` colour JPEGs of ``side`` x ``side`` pixels."""
    files = sorted(FASHION.rglob("*.png"))[:count] if FASHION.is_dir() else []
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        if files:
            gray = Image.open(files[i % len(files)]).convert("L").resize((side, side), Image.Resampling.BICUBIC)
            tint = rng.uniform(0.4, 1.0, 3)
            pixels = (np.asarray(gray, dtype=np.float32)[..., None] * tint).astype(np.uint8)
        else:
            y, x = np.mgrid[0:side, 0:side] / side
            phase = rng.uniform(0, 6.28, 3)
            pixels = (127 + 120 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class PILGaussianBlur:
    """Blur with a random radius in [0.1, 2] (SimCLR appendix A), as PIL-based pipelines do."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def pil_pipeline(cfg: Any) -> Any:
    """The v1 multi-crop recipe on PIL images: one callable from bytes to the list of crops."""
    from torchvision import transforms as T

    def view(size: int, scale: Any, blur_p: float) -> Any:
        jitter = [f * cfg.jitter_strength for f in cfg.jitter]
        return T.Compose(
            [
                T.RandomResizedCrop(size, scale=tuple(scale)),
                T.RandomHorizontalFlip(cfg.flip_p),
                T.RandomApply([T.ColorJitter(*jitter)], p=cfg.jitter_p),
                T.RandomGrayscale(cfg.grayscale_p),
                T.RandomApply([PILGaussianBlur()], p=blur_p),
                T.ToTensor(),
                T.Normalize(cfg.mean, cfg.std),
            ]
        )

    views = [view(cfg.global_size, cfg.global_scale, cfg.blur_p[i % len(cfg.blur_p)]) for i in range(cfg.global_crops)]
    views += [view(cfg.local_size, cfg.local_scale, cfg.local_blur_p)] * cfg.local_crops

    def run(data: bytes) -> list[torch.Tensor]:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return [v(image) for v in views]

    return run


def ours_pipeline(cfg: Any, hue_space: str = "yiq") -> Any:
    from sslframe.data.transforms import MultiCropTransform, decode

    transform = MultiCropTransform(OmegaConf.merge(cfg, {"hue_space": hue_space}))
    return lambda data: transform(decode(data))


def images_per_second(pipeline: Any, jpegs: list[bytes]) -> float:
    start = time.perf_counter()
    for data in jpegs:
        crops = pipeline(data)
    assert crops[0].shape[-1] == 224 and crops[-1].shape[-1] == 96
    return len(jpegs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quick = quick_mode()  # BENCH_QUICK=1: a smoke run
    parser.add_argument("--images", type=int, default=16 if quick else 64)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2 if quick else 5)
    args = parser.parse_args()
    from sslframe.config.schema import MultiCropConfig

    torch.set_num_threads(1)
    cfg = OmegaConf.structured(MultiCropConfig())  # SwAV defaults: 2x224 + 6x96
    jpegs = make_jpegs(args.images, args.side)
    pipelines = {
        "ours (default: YIQ hue)": ours_pipeline(cfg),
        "ours, transform.hue_space=hsv": ours_pipeline(cfg, "hsv"),
        "PIL + transforms v1": pil_pipeline(cfg),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for pipeline in pipelines.values():
        pipeline(jpegs[0])  # warm-up
    for _ in range(args.repeats):
        for name, pipeline in pipelines.items():  # interleaved, so load changes hit both alike
            rates[name].append(images_per_second(pipeline, jpegs))
    baseline = statistics.median(rates["PIL + transforms v1"])
    rows = [
        {
            "pipeline": name,
            "images_per_s_per_worker": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "speedup": statistics.median(values) / baseline,
        }
        for name, values in rates.items()
    ]
    source = "Fashion-MNIST upscaled" if FASHION.is_dir() else "generated colour fields"
    notes = (
        f"SwAV multi-crop 2x224 + 6x96 on {args.images} {args.side}px JPEGs ({source}), one thread, "
        f"median of {args.repeats} repeats (min/max beside it)."
    )
    path = write_results("data_pipeline", rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
