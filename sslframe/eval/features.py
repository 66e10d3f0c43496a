"""Load a pretrained trunk from a checkpoint and extract pooled features."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import Sampler

from sslframe.data.build import build_eval_loader
from sslframe.data.loader import ViewsDataset, make_loader
from sslframe.data.sources import build_source
from sslframe.data.transforms import eval_transform
from sslframe.distributed import checkpoint as ckpt
from sslframe.distributed.export import trunk_weights
from sslframe.distributed.micro_batches import running_norms
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
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()
    for batch in eval_batches(data_cfg, path, transform, batch_size, num_workers, rank, world_size):
        images = batch.views[0].to(device, memory_format=torch.channels_last)
        yield trunk_features(trunk, images, layer).cpu(), batch.labels, batch.indices


def eval_batches(
    data_cfg: Any, path: str, transform: Any, batch_size: int, num_workers: int, rank: int = 0, world_size: int = 1
) -> Iterator[Any]:
    """The non-empty batches of this rank's share of ``path`` (every sample once, in order)."""
    source = build_source(data_cfg, path)
    if hasattr(source, "read"):
        dataset = ViewsDataset(source, transform, seed=0)
        sampler = StridedSampler(len(source), rank, world_size)
        loader = make_loader(dataset, sampler, batch_size, num_workers, drop_last=False)
    elif world_size == 1:
        loader = build_eval_loader(data_cfg, path, transform, batch_size, num_workers)
    else:
        raise UserError("tar shards are extracted by one process for now; run tools/eval.py extract without torchrun")
    for batch in loader:
        if batch.size:
            yield batch


@torch.no_grad()
def recalibrate_batch_norm(trunk: torch.nn.Module, batches: Iterable[torch.Tensor], limit: int) -> int:
    """Precise BN (Wu & Johnson 2021, *Rethinking "Batch" in BatchNorm*, sec. 3): each batch-norm
    layer's running mean and variance replaced by their average over the batches of the first
    ``limit`` images of ``batches`` (the evaluation view), weights unchanged. Running statistics
    otherwise come from training (an exponential average over augmented views) or, at random
    initialisation, from no data at all (mean 0, variance 1: the layer passes its input through).
    Under torch.distributed every rank passes its own images and the statistics are averaged over
    the ranks, weighted by their image counts. Returns the number of images this rank used."""
    norms = running_norms(trunk)
    if not norms:
        raise UserError("eval.precise_bn_images: this trunk has no batch-norm layers to re-estimate")
    momenta = [m.momentum for m in norms]
    was_training = trunk.training
    trunk.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts alike
        m.train()
    seen = 0
    try:
        for images in batches:
            take = images[: limit - seen]
            if take.shape[0] < 2:
                break
            trunk(take)
            seen += take.shape[0]
            if seen >= limit:
                break
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        trunk.train(was_training)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count = torch.tensor([float(seen)], device=norms[0].running_mean.device)
        dist.all_reduce(count)
        if count.item() == 0:
            raise UserError("eval.precise_bn_images: no images to re-estimate batch-norm statistics on")
        for m in norms:
            for buffer in (m.running_mean, m.running_var):
                weighted = buffer * seen
                dist.all_reduce(weighted)
                buffer.copy_(weighted / count)
    elif seen == 0:
        raise UserError("eval.precise_bn_images: no images to re-estimate batch-norm statistics on")
    return seen


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
