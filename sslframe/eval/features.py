"""Load a pretrained trunk from a checkpoint and extract pooled features."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import Sampler

from sslframe.data.build import build_eval_loader
from sslframe.data.loader import ViewsDataset, make_loader
from sslframe.data.sources import build_source
from sslframe.data.transforms import eval_transform
from sslframe.distributed import checkpoint as ckpt
from sslframe.distributed.export import trunk_weights
from sslframe.errors import UserError
from sslframe.models.trunks import Trunk, build_trunk


def load_trunk(path: str | Path, random_init: bool = False, encoder: str = "student") -> tuple[Trunk, Any, Path]:
    """The trunk of a checkpoint (or the same architecture freshly initialised) and its run config.
    ``encoder="teacher"``: the weights of the method's momentum copy of the trunk instead
    (``trunk_weights``); with ``random_init`` it changes nothing, the copy starts as the trunk."""
    folder = ckpt.resolve_checkpoint(path)
    state, meta = ckpt.load_checkpoint(folder)
    run_cfg = OmegaConf.create(meta["config"])
    weights = trunk_weights(state["model"], encoder, folder)
    with torch.random.fork_rng(devices=[]):
        # The trainer seeds with trainer.seed and builds the trunk first, so the random-init
        # baseline is exactly the network the run started from.
        torch.manual_seed(int(run_cfg.trainer.seed))
        trunk = build_trunk(run_cfg.trunk)
    if not random_init:
        missing, unexpected = trunk.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise UserError(
                f"checkpoint '{folder}' does not match its trunk: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    return trunk.eval(), run_cfg, folder


class RawPixels(torch.nn.Module):
    """The evaluation view's normalised pixels, flattened, as features (``eval.raw_pixels=true``):
    the baseline a pretrained trunk should beat under the same protocol."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().flatten(1)


class StridedSampler(Sampler[tuple[int, int]]):
    """Every sample exactly once, rank r taking indices r, r + world, ... (no shuffle, no
    dropped tail: unlike the training sampler, extraction must cover the whole dataset)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((0, i) for i in self.indices)


@contextmanager
def block_output(trunk: Trunk, layer: int) -> Iterator[list[torch.Tensor]]:
    """Captures the output of ``trunk.blocks()[layer]`` during forward passes."""
    captured: list[torch.Tensor] = []
    handle = trunk.blocks()[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


def pool(features: torch.Tensor) -> torch.Tensor:
    """Global average over space (N, C, H, W) or tokens (N, T, C); vectors pass through."""
    if features.dim() == 4:
        return features.float().mean((2, 3))
    if features.dim() == 3:
        return features.float().mean(1)
    return features.float()


def trunk_features(trunk: Trunk, images: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """The pooled output (``layer`` None) or the average-pooled output of block ``layer``."""
    if layer is None:
        return trunk(images).float()
    with block_output(trunk, layer) as captured:
        trunk(images)
    return pool(captured[-1])


@torch.no_grad()
def iter_features(
    trunk: Trunk,
    data_cfg: Any,
    path: str,
    transform: Any,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    layer: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(raw features, labels, dataset indices) batch by batch for this rank's share of ``path``."""
    source = build_source(data_cfg, path)
    if hasattr(source, "read"):
        dataset = ViewsDataset(source, transform, seed=0)
        sampler = StridedSampler(len(source), rank, world_size)
        loader = make_loader(dataset, sampler, batch_size, num_workers, drop_last=False)
    elif world_size == 1:
        loader = build_eval_loader(data_cfg, path, transform, batch_size, num_workers)
    else:
        raise UserError("tar shards are extracted by one process for now; run tools/eval.py extract without torchrun")
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()
    for batch in loader:
        if batch.size == 0:
            continue
        images = batch.views[0].to(device, memory_format=torch.channels_last)
        yield trunk_features(trunk, images, layer).cpu(), batch.labels, batch.indices


def extract_features(
    trunk: Trunk,
    data_cfg: Any,
    path: str,
    size: int,
    mean: Any,
    std: Any,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    layer: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised pooled features and labels for every image under ``path``."""
    parts = list(
        iter_features(trunk, data_cfg, path, eval_transform(size, mean, std), batch_size, num_workers, device, layer)
    )
    if not parts:
        raise UserError(f"no readable images under '{path}'")
    feats = torch.cat([p[0] for p in parts])
    return F.normalize(feats, dim=1), torch.cat([p[1] for p in parts])
