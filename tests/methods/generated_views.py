"""Short training runs of a method on generated images with two simple augmentations.

Images are a random colour plus a smooth random texture (a 4x4 grid upsampled); a view is a
random 16 px crop of the 20 px image, flipped half the time, scaled by a random factor in
[0.8, 1.2] and with pixel noise.
The loop calls the method as the Trainer does (``Trainer._update``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslframe.methods import Method, StepContext
from sslframe.models.heads import MLPHeadConfig
from sslframe.models.trunks import build_trunk
from sslframe.models.trunks.resnet import ResNetConfig

IMAGE_SIDE, CROP_SIDE = 20, 16


def textures(count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(count, 3, 1, 1, generator=g) * 2 - 1
    coarse = torch.rand(count, 3, 4, 4, generator=g) - 0.5
    return colour + F.interpolate(coarse, size=IMAGE_SIDE, mode="bilinear", align_corners=False)


def view(images: torch.Tensor, g: torch.Generator, side: int = CROP_SIDE) -> torch.Tensor:
    out = []
    for image in images:
        top, left = torch.randint(0, IMAGE_SIDE - side + 1, (2,), generator=g).tolist()
        crop = image[:, top : top + side, left : left + side]
        if torch.rand((), generator=g) < 0.5:
            crop = crop.flip(-1)
        out.append(crop * (0.8 + 0.4 * torch.rand((), generator=g)))
    batch = torch.stack(out)
    return batch + 0.1 * torch.randn(batch.shape, generator=g)


@dataclass
class Run:
    method: Method
    losses: list[float]
    embedding_std: float
    embedding_dim: int


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_method(method_cls: type[Method], method_cfg: Any, head_cfg: MLPHeadConfig, seed: int = 0) -> Method:
    """``method_cls`` on the TINY trunk (ResNet-18 at width 0.125, small-image stem), built directly
    from schema instances (no config composition: fast, and independent of the experiment files)."""
    torch.manual_seed(seed)
    trunk = build_trunk(OmegaConf.structured(ResNetConfig(arch="resnet18", width_multiplier=0.125, small_images=True)))
    return method_cls(trunk, OmegaConf.structured(head_cfg), OmegaConf.structured(method_cfg))


def short_run(
    method: Method,
    steps: int,
    lr: float,
    batch: int = 16,
    local_crops: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    images: int = 512,
) -> Run:
    """Train ``steps`` SGD steps; return the losses and the mean per-dimension std of the last
    step's first-view embeddings (L2-normalised: about 1/sqrt(dim) when not collapsed)."""
    with one_thread():
        return _train(method, steps, lr, batch, local_crops, weight_decay, seed, images)


def _train(
    method: Method, steps: int, lr: float, batch: int, local_crops: int, weight_decay: float, seed: int, images: int
) -> Run:
    torch.manual_seed(seed)
    data = textures(images, seed)
    g = torch.Generator().manual_seed(seed + 1)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    method.train()
    losses: list[float] = []
    out = None
    for step in range(steps):
        picked = data[torch.randperm(images, generator=g)[:batch]]
        crops: Sequence[torch.Tensor] = [view(picked, g), view(picked, g)]
        crops = [*crops, *(view(picked, g, side=8) for _ in range(local_crops))]
        ctx = StepContext(step, step // 10, 10, steps)
        out = method.training_step(list(crops), ctx)
        out.loss.backward()
        method.before_optimizer_step(ctx)
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_optimizer_step(ctx)
        losses.append(float(out.loss.detach()))
    assert out is not None and out.embeddings is not None
    return Run(method, losses, float(out.embeddings.std(dim=0).mean()), out.embeddings.shape[1])
