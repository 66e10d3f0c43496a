"""Tar shards in the WebDataset layout, read as a deterministic, resumable stream.

A shard holds samples as tar members grouped by key (``000042.jpg`` + ``000042.cls``); an
``index.json`` next to the shards lists them with their sample counts, so the stream knows its
length and can skip whole shards. Shards are read through fsspec (local paths, ``file://`` and
any other fsspec URL) with the ``webdataset`` tar iterator: member bytes go to memory only; a
member's name is a key, never a file-system path (docs/architecture.md, principle 8).

Order (docs/architecture.md, principle 6), a pure function of (seed, epoch, rank, world size, worker):

1. the shards are permuted per (seed, epoch) and read as one sequence of samples;
2. rank r takes the r-th of ``world`` equal contiguous ranges (the remainder is dropped, so every
   rank runs the same number of steps, as DDP needs);
3. the rank's batches go round-robin to the loader workers (batch k from worker k % W, the order
   in which torch's DataLoader collects them); each worker reads one contiguous part of the
   rank's range and shuffles it through a buffer seeded by (seed, epoch, rank, worker).

The buffer shuffle permutes positions, not bytes, so the whole order is known before reading:
skipping to a batch drops what precedes it without decoding it, and shards holding nothing still
needed are never opened.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_iterator

from sslframe.data.loader import BadSample, views_item
from sslframe.errors import UserError

INDEX_NAME = "index.json"
INDEX_FORMAT = "sslframe-shards/1"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Shard:
    name: str
    count: int


def index_url(location: str) -> str:
    """``location`` is the index file itself or the folder holding ``index.json``."""
    return location if location.endswith(".json") else f"{location.rstrip('/')}/{INDEX_NAME}"


class ShardIndex:
    """The shards of a data set with their sample counts, read from ``index.json``."""

    def __init__(self, location: str) -> None:
        self.location = index_url(str(location))
        self.base = self.location.rsplit("/", 1)[0] if "/" in self.location else "."
        try:
            with fsspec.open(self.location, "rt", encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot read the shard index '{self.location}' ({type(exc).__name__}); "
                "write shards with tools/make_shards.py or point data.path at their index.json"
            ) from None
        self.shards = _parse_index(raw, self.location)
        self.classes: list[str] = [str(c) for c in raw.get("classes", [])]
        counts = np.array([s.count for s in self.shards], dtype=np.int64)
        # offsets[i]: global index of shard i's first sample (shards in index order).
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def url(self, shard: int) -> str:
        return f"{self.base}/{self.shards[shard].name}"


def _parse_index(raw: Any, where: str) -> list[Shard]:
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT or not isinstance(raw.get("shards"), list):
        raise UserError(f"'{where}' is not a shard index (expected format '{INDEX_FORMAT}' with a 'shards' list)")
    shards = []
    for entry in raw["shards"]:
        name, count = (entry.get("name"), entry.get("count")) if isinstance(entry, dict) else (None, None)
        # Plain file names only: an index never points outside its own folder.
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
            raise UserError(f"shard index '{where}' names an invalid shard {name!r} (a plain file name is needed)")
        if not isinstance(count, int) or count < 0:
            raise UserError(f"shard index '{where}' gives shard '{name}' an invalid count {count!r}")
        shards.append(Shard(name, count))
    if not shards or sum(s.count for s in shards) == 0:
        raise UserError(f"shard index '{where}' lists no samples")
    return shards


def write_index(folder: str, shards: list[Shard], classes: list[str] | None = None) -> str:
    """Write ``index.json`` for ``shards`` (in read order) into ``folder``; returns its URL."""
    url = index_url(folder)
    raw = {
        "format": INDEX_FORMAT,
        "total": sum(s.count for s in shards),
        "classes": list(classes or []),
        "shards": [{"name": s.name, "count": s.count} for s in shards],
    }
    with fsspec.open(url, "wt", encoding="utf-8") as f:
        json.dump(raw, f, indent=1)
    return url


def read_samples(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard in member order: dicts of extension -> bytes plus ``__key__``.
    Non-regular members (links, devices, folders) are ignored; nothing touches the disk."""
    with fsspec.open(url, "rb") as stream:
        yield from group_by_keys({**member, "__url__": url} for member in tar_file_iterator(stream))


def count_samples(url: str) -> int:
    """Samples in an existing shard (to index shards written by other tools)."""
    return sum(1 for _ in read_samples(url))


def parse_sample(sample: dict[str, Any]) -> tuple[str, bytes, int]:
    """(key, image bytes, label) of a WebDataset sample; label -1 without a ``cls`` member."""
    key = str(sample.get("__key__", "?"))
    image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if image is None:
        raise ValueError(f"no image member (found {sorted(k for k in sample if not k.startswith('__'))})")
    label = int(sample["cls"].decode("ascii").strip()) if "cls" in sample else -1
    return key, image, label


# ------------------------------------------------------------------------------ planning
def _permutation(n: int, *words: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence(list(words))).permutation(n)


def rank_pieces(index: ShardIndex, seed: int, epoch: int, rank: int, world: int, shuffle: bool) -> list[tuple]:
    """This rank's samples of an epoch as ``(shard, first, stop)`` member ranges, in order."""
    order = _permutation(len(index.shards), seed, epoch) if shuffle else np.arange(len(index.shards))
    per_rank = len(index) // world
    return _cut([(int(s), 0, index.shards[s].count) for s in order], rank * per_rank, (rank + 1) * per_rank)


def _cut(pieces: list[tuple], start: int, stop: int) -> list[tuple]:
    """The sub-ranges covering positions ``[start, stop)`` of the sequence ``pieces`` spans."""
    out, pos = [], 0
    for shard, first, end in pieces:
        lo, hi = max(start - pos, 0), min(stop - pos, end - first)
        if lo < hi:
            out.append((shard, first + lo, first + hi))
        pos += end - first
        if pos >= stop:
            break
    return out


def batches_per_epoch(samples: int, batch_size: int, drop_last: bool) -> int:
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)


def worker_span(samples: int, batch_size: int, drop_last: bool, workers: int, worker: int) -> tuple[int, int]:
    """Positions ``[start, stop)`` of the rank's samples that ``worker`` reads: the batches
    k = worker, worker + W, ..., laid out contiguously in worker order."""
    steps = batches_per_epoch(samples, batch_size, drop_last)

    def size(w: int) -> int:
        ks = range(w, steps, workers)
        full = len(ks) * batch_size
        if ks and ks[-1] == steps - 1:
            full -= steps * batch_size - min(samples, steps * batch_size)
        return full

    start = sum(size(w) for w in range(worker))
    return start, start + size(worker)


def buffer_order(n: int, buffer: int, *words: int) -> np.ndarray:
    """The output order of a shuffle buffer of ``buffer`` items fed positions 0..n-1: each new
    item replaces a randomly chosen one, which is emitted; the rest are emitted in random order
    at the end. Item i is always emitted within ``buffer`` reads of being read."""
    if buffer <= 1 or n <= 1:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence(list(words)))
    held = list(range(min(buffer, n)))
    picks = rng.integers(0, len(held), size=max(n - len(held), 0))
    out = np.empty(n, dtype=np.int64)
    for t, incoming in enumerate(range(len(held), n)):
        slot = int(picks[t])
        out[t] = held[slot]
        held[slot] = incoming
    out[n - len(held) :] = np.array(held)[rng.permutation(len(held))]
    return out


# -------------------------------------------------------------------------------- stream
class ShardedImageStream(IterableDataset):
    """Decoded, augmented samples of this rank's share of the shards, from a settable position.

    ``set_position(epoch, batch)`` is shared with the loader workers (also persistent ones):
    the next iteration yields the epoch's batches from ``batch`` on, in the same order an
    uninterrupted iteration would.
    """

    def __init__(
        self,
        index: ShardIndex,
        transform: Any,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        drop_last: bool = True,
        decoder: str = "torchvision",
    ) -> None:
        self.index = index
        self.transform = transform
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.drop_last = drop_last
        self.decoder = decoder
        self._position = torch.zeros(2, dtype=torch.long).share_memory_()

    @property
    def samples_per_rank(self) -> int:
        return len(self.index) // self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return batches_per_epoch(self.samples_per_rank, self.batch_size, self.drop_last)

    def set_position(self, epoch: int, batch: int = 0) -> None:
        self._position[0], self._position[1] = epoch, batch

    def plan(self, epoch: int, batch: int, worker: int, workers: int) -> tuple[list[tuple], np.ndarray]:
        """What loader ``worker`` of ``workers`` reads after ``set_position(epoch, batch)``: its
        member ranges and the order (positions within them) in which it emits samples."""
        # This worker yields the epoch's batches batch + worker, batch + worker + W, ...: the
        # ones a worker ``role`` read in an iteration started at batch 0.
        role, first = (batch + worker) % workers, (batch + worker) // workers
        start, stop = worker_span(self.samples_per_rank, self.batch_size, self.drop_last, workers, role)
        pieces = rank_pieces(self.index, self.seed, epoch, self.rank, self.world_size, self.shuffle)
        mine = _cut(pieces, start, stop)
        order = buffer_order(stop - start, self.shuffle_buffer, self.seed, epoch, self.rank, role, workers)
        return mine, order[first * self.batch_size :]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, batch = (int(v) for v in self._position)
        pieces, order = self.plan(epoch, batch, worker, workers)
        for global_index, key, item in self._read(pieces, order):
            if isinstance(item, BadSample):
                yield item
            else:
                data, label = item
                yield views_item(self.transform, self.seed, epoch, global_index, key, data, label, self.decoder)

    def _read(self, pieces: list[tuple], order: np.ndarray) -> Iterator[tuple[int, str, Any]]:
        """(global index, key, (bytes, label) or BadSample) in ``order``; members not in
        ``order`` are skipped undecoded, shards with none of them are not opened."""
        needed = np.zeros(sum(stop - first for _, first, stop in pieces), dtype=bool)
        needed[order] = True
        pending: dict[int, tuple[int, str, Any]] = {}
        cursor, pos = 0, 0
        for shard, first, stop in pieces:
            span = stop - first
            if needed[pos : pos + span].any():
                for offset, entry in self._shard_entries(shard, first, stop):
                    if needed[pos + offset]:
                        pending[pos + offset] = entry
                    while cursor < len(order) and int(order[cursor]) in pending:
                        yield pending.pop(int(order[cursor]))
                        cursor += 1
            pos += span
        while cursor < len(order):
            yield pending.pop(int(order[cursor]))
            cursor += 1

    def _shard_entries(self, shard: int, first: int, stop: int) -> Iterator[tuple[int, tuple[int, str, Any]]]:
        """Members first..stop-1 of a shard; ones it lacks (truncated, unreadable) are BadSamples."""
        base = int(self.index.offsets[shard])
        name = self.index.shards[shard].name
        done = first
        try:
            for member, sample in enumerate(read_samples(self.index.url(shard))):
                if member >= stop:
                    break
                if member < first:
                    continue
                key = f"{name}/{sample.get('__key__', '?')}"
                try:
                    _, data, label = parse_sample(sample)
                    entry: Any = (data, label)
                except (ValueError, UnicodeDecodeError) as exc:
                    entry = BadSample(key, f"{type(exc).__name__}: {exc}")
                yield member - first, (base + member, key, entry)
                done = member + 1
            reason = "missing from the shard (fewer samples than its index entry)"
        except Exception as exc:  # a broken shard costs its samples, not the run
            reason = f"shard unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for member in range(done, stop):
            key = f"{name}[{member}]"
            yield member - first, (base + member, key, BadSample(key, reason))
