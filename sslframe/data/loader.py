"""Deterministic, resumable batches (docs/architecture.md, principle 6).

The sample order is a pure function of (seed, epoch, rank, world size); the augmentation of
a sample is a pure function of (seed, epoch, index), whatever worker decodes it. So a run
resumed at batch k of an epoch sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from sslframe.data.transforms import decode

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, index: int, *stream: int) -> int:
    """A seed for one sample (or one batch), a pure function of its arguments; ``stream`` keeps
    other uses of the same position apart (the trainer's data pass before training)."""
    return int(np.random.SeedSequence([seed, epoch, index, *stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for one sample. In the main process the previous state is
    restored afterwards, so data loading never disturbs the training RNG stream."""
    in_worker = get_worker_info() is not None
    saved = None if in_worker else torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            torch.set_rng_state(saved)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for this rank's share of a seeded permutation.

    Each epoch's permutation comes from (seed, epoch); rank r takes every world-th element
    starting at r, so ranks are disjoint. ``start`` skips that many of this rank's samples
    without touching them (resuming mid-epoch).
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        per_rank = self.num_samples // self.world_size
        return order[self.rank : per_rank * self.world_size : self.world_size]

    def __len__(self) -> int:
        return self.num_samples // self.world_size - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices(self.epoch)[self.start :]:
            yield self.epoch, index


def views_item(
    transform: Callable[[torch.Tensor], Any] | None,
    seed: int,
    epoch: int,
    index: int,
    key: str,
    data: bytes,
    label: int,
    decoder: str = "torchvision",
) -> Any:
    """Decode and augment one sample (augmentation seeded by (seed, epoch, index)), or a
    ``BadSample`` naming the key and the reason when it cannot be decoded. Only decoding
    failures make a sample unreadable: an exception in the augmentation is a bug, raised with
    its traceback (it would otherwise be counted, and hidden, as bad data)."""
    try:
        image = decode(data, decoder)
    except Exception as exc:  # an undecodable sample is skipped and reported
        return bad_sample(key, exc)
    if transform is None:
        return image, label, index
    with seeded_rng(sample_seed(seed, epoch, index)):
        return transform(image), label, index


def bad_sample(key: str, exc: BaseException) -> BadSample:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return BadSample(key, f"{type(exc).__name__}: {text}")


class ViewsDataset(Dataset):
    """Reads, decodes and augments one sample of a map-style source; an unreadable sample
    becomes a ``BadSample``."""

    def __init__(
        self, source: Any, transform: Callable[[torch.Tensor], Any] | None, seed: int, decoder: str = "torchvision"
    ) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        try:
            key, data, label = self.source.read(index)
        except Exception as exc:  # a missing or unreadable file is skipped and reported
            return bad_sample(self.source.key(index), exc)
        return views_item(self.transform, self.seed, epoch, index, key, data, label, self.decoder)


@dataclass
class BadSample:
    key: str
    reason: str


@dataclass
class Batch:
    views: list[torch.Tensor]
    labels: torch.Tensor
    bad: list[BadSample] = field(default_factory=list)
    # (height, width) of each image when ``views`` holds one padded batch of whole images.
    sizes: torch.Tensor | None = None
    # Each sample's index in the dataset (0..N-1), e.g. for memory banks (DeepCluster-v2).
    indices: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader calls this with ``pin_memory=True``), so the
        host-to-GPU copies can run asynchronously."""
        self.views = [v.pin_memory() for v in self.views]
        self.labels = self.labels.pin_memory()
        if self.indices is not None:
            self.indices = self.indices.pin_memory()
        return self


def collate_views(items: list[Any]) -> Batch:
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it for it in items if isinstance(it, BadSample)]
    if not good:
        return Batch([], torch.zeros(0, dtype=torch.long), bad, indices=torch.zeros(0, dtype=torch.long))
    first = good[0][0]
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    indices = torch.tensor([g[2] for g in good], dtype=torch.long)
    if isinstance(first, torch.Tensor):
        images, sizes = stack_padded([g[0] for g in good])
        return Batch([images], labels, bad, sizes, indices)
    views = [torch.stack([g[0][v] for g in good]) for v in range(len(first))]
    return Batch(views, labels, bad, indices=indices)


def stack_padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack C x H x W images into one batch padded by repeating each image's last row and
    column (so bilinear sampling at an image's border sees what it would without padding);
    returns the batch and each image's (H, W)."""
    sizes = torch.tensor([img.shape[-2:] for img in images], dtype=torch.long)
    if bool((sizes == sizes[0]).all()):
        return torch.stack(images), sizes
    height, width = (int(v) for v in sizes.max(0).values)
    out = images[0].new_empty((len(images), images[0].shape[0], height, width))
    for i, img in enumerate(images):
        h, w = img.shape[-2:]
        out[i, :, :h, :w] = img
        out[i, :, h:, :w] = img[:, -1:, :]
        out[i, :, :, w:] = out[i, :, :, w - 1 : w]
    return out, sizes


def make_loader(
    dataset: Dataset,
    sampler: Sampler | None,
    batch_size: int,
    num_workers: int,
    drop_last: bool = True,
    prefetch_factor: int = 2,
    persistent_workers: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent_workers}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_views,
        drop_last=drop_last,
        pin_memory=pin_memory,
        # Each new iterator (one per epoch, and one on resume) draws its workers' base seed from
        # this generator; without one it draws from torch's global generator, which then differs
        # between a resumed run and an uninterrupted one and shifts whatever the training step
        # draws from it (masks, stochastic depth). Augmentations are seeded per sample anyway.
        generator=torch.Generator().manual_seed(0),
        **extra,
    )
