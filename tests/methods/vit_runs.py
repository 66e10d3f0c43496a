"""Tiny ViTs, generated images and a short training loop shared by the MAE, I-JEPA and MoCo v3 tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslframe.methods import Method, StepContext
from sslframe.models.trunks.vit import VisionTransformer
from sslframe.optim.build import parameter_groups

SIZE = 16


def tiny_vit(**overrides: object) -> VisionTransformer:
    """ViT-tiny cut to 2 blocks of width 32 with 4x4 patches: 16 patches on 16-pixel images."""
    kwargs = {"patch_size": 4, "image_size": SIZE, "embed_dim": 32, "depth": 2, "num_heads": 4, **overrides}
    return VisionTransformer("vit_tiny", **kwargs)  # type: ignore[arg-type]


def generated_images(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Four kinds of pattern (horizontal and vertical stripes, checkerboard, a bright square) with
    random colours, frequencies and offsets, plus pixel noise; roughly zero mean, unit scale."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = coords.view(-1, 1).expand(size, size), coords.view(1, -1).expand(size, size)
    images = []
    for i in range(n):
        freq = 0.3 + 0.5 * torch.rand((), generator=g)
        phase = 6.28 * torch.rand((), generator=g)
        kind = i % 4
        if kind == 0:
            pattern = torch.sin(freq * rows + phase)
        elif kind == 1:
            pattern = torch.sin(freq * cols + phase)
        elif kind == 2:
            pattern = torch.sin(freq * rows + phase) * torch.sin(freq * cols + phase)
        else:
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            pattern = -torch.ones(size, size)
            pattern[top : top + size // 2, left : left + size // 2] = 1.0
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        images.append(pattern * colour + 0.1 * torch.randn(3, size, size, generator=g))
    return torch.stack(images)


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random-resized crop (scale 0.5-1) back to full size, a random flip and brightness shift."""
    size = images.shape[-1]
    side = int(size * (0.5 + 0.5 * torch.rand((), generator=g)).sqrt())
    top, left = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
    crop = images[..., top : top + side, left : left + side]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
    if torch.rand((), generator=g) < 0.5:
        out = out.flip(-1)
    return out + 0.2 * (torch.rand(images.shape[0], 1, 1, 1, generator=g) - 0.5)


def short_run(method: Method, steps: int = 30, batch: int = 16, lr: float = 1e-3, seed: int = 0) -> dict:
    """Train ``method`` as the Trainer does (step, backward, hooks, AdamW, hooks) on generated
    images; returns the losses and the mean per-dimension std of the returned embeddings."""
    torch.manual_seed(seed)
    data = generated_images(64, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(parameter_groups(method, 0.05, True), lr=lr)
    losses, stds = [], []
    method.train()
    for step in range(steps):
        images = data[torch.randint(0, len(data), (batch,), generator=g)]
        crops = [augment(images, g), augment(images, g)]
        ctx = StepContext(step, 0, steps, steps)
        out = method.training_step(crops, ctx)
        out.loss.backward()
        method.before_optimizer_step(ctx)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_optimizer_step(ctx)
        losses.append(float(out.loss.detach()))
        stds.append(float(out.embeddings.std(dim=0).mean()))
    return {"losses": losses, "stds": stds, "dim": out.embeddings.shape[1]}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def collapse_threshold(dim: int) -> float:
    """L2-normalised embeddings spread over the sphere have a per-dimension std of about
    1/sqrt(dim), collapsed ones 0 (Chen & He 2021, SimSiam sec. 4.1); a tenth of the spread
    value separates the two."""
    return 0.1 / dim**0.5


def assert_learns_without_collapse(run: dict) -> None:
    losses, stds = run["losses"], run["stds"]
    assert mean(losses[-5:]) < 0.95 * mean(losses[:5]), losses
    assert min(stds[-5:]) > collapse_threshold(run["dim"]), stds
