"""Loaders for every source: one object the trainer positions and iterates, whatever the source.

The position of the data is ``(epoch, batch within the epoch)``; the order of every source is a
pure function of it (and of seed, rank, world size and worker count), so a run that knows its
step knows its data position: the checkpointed step is the whole data state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from sslframe.data.loader import Batch, EpochSampler, ViewsDataset, make_loader
from sslframe.data.shards import ShardedImageStream, ShardIndex, batches_per_epoch
from sslframe.data.sources import build_source
from sslframe.errors import UserError


class TrainData:
    """Batches of this rank's share of the data, from a position set by ``set_position``."""

    def __init__(
        self,
        loader: DataLoader,
        num_samples: int,
        steps_per_epoch: int,
        set_position: Callable[[int, int], None],
    ) -> None:
        self.loader = loader
        # Samples in the whole data set (sizes per-sample state such as memory banks).
        self.num_samples = num_samples
        self.steps_per_epoch = steps_per_epoch
        self._set_position = set_position

    def set_position(self, epoch: int, batch: int) -> None:
        """The next iteration yields ``epoch``'s batches from ``batch`` on."""
        self._set_position(epoch, batch)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)


def _loader_options(cfg: Any, device_type: str) -> dict[str, Any]:
    return {
        "num_workers": cfg.num_workers,
        "drop_last": cfg.drop_last,
        "prefetch_factor": cfg.prefetch_factor,
        "persistent_workers": cfg.persistent_workers,
        "pin_memory": cfg.pin_memory and device_type == "cuda",
    }


def build_train_data(
    cfg: Any,
    transform: Callable[[torch.Tensor], Any] | None,
    seed: int,
    rank: int,
    world_size: int,
    device_type: str = "cpu",
    decoder: str = "torchvision",
) -> TrainData:
    """Training batches of ``cfg`` (the data config) for one rank; ``transform`` augments each
    decoded image (None: whole images, augmented later on the batch)."""
    source = build_source(cfg)
    options = _loader_options(cfg, device_type)
    batch_size = cfg.batch_size
    if isinstance(source, ShardIndex):
        stream = ShardedImageStream(
            source,
            transform,
            seed,
            batch_size,
            rank,
            world_size,
            shuffle_buffer=cfg.shuffle_buffer,
            drop_last=cfg.drop_last,
            decoder=decoder,
        )
        loader = make_loader(stream, None, batch_size, **options)
        data = TrainData(loader, len(source), stream.steps_per_epoch, stream.set_position)
    else:
        sampler = EpochSampler(len(source), seed, rank, world_size)

        def position(epoch: int, batch: int) -> None:
            sampler.set_epoch(epoch, start=batch * batch_size)

        loader = make_loader(ViewsDataset(source, transform, seed, decoder), sampler, batch_size, **options)
        steps = batches_per_epoch(len(source) // world_size, batch_size, cfg.drop_last)
        data = TrainData(loader, len(source), steps, position)
    if data.steps_per_epoch == 0:
        raise UserError(
            f"the dataset at '{cfg.path}' has {data.num_samples} images, fewer than one batch of "
            f"{batch_size} per process (lower data.batch_size)"
        )
    return data


def build_eval_loader(
    cfg: Any, path: str, transform: Callable[[torch.Tensor], Any], batch_size: int, num_workers: int
) -> DataLoader:
    """Every sample under ``path`` once, unshuffled and unaugmented beyond ``transform``."""
    source = build_source(cfg, path)
    if isinstance(source, ShardIndex):
        stream = ShardedImageStream(source, transform, 0, batch_size, shuffle=False, drop_last=False)
        return make_loader(stream, None, batch_size, num_workers, drop_last=False)
    sampler = EpochSampler(len(source), seed=0, shuffle=False)
    return make_loader(ViewsDataset(source, transform, seed=0), sampler, batch_size, num_workers, drop_last=False)


def build_views(transform_cfg: Any) -> tuple[Any, Any]:
    """(per-image transform for the loader workers, whole-batch transform for the training
    process): one of them, as ``transform.backend`` says, the other None."""
    from sslframe.data.batch_transforms import BatchMultiCrop
    from sslframe.data.transforms import MultiCropTransform

    if transform_cfg.backend == "batch":
        return None, BatchMultiCrop(transform_cfg)
    return MultiCropTransform(transform_cfg), None
