"""Resumable embedding of an image source into the feature store, across processes.

The work is cut into pieces that depend on the source alone: one tar shard of a ``shards``
source, or ``piece_size`` consecutive samples of a folder or file list. Piece ``j`` is embedded
by rank ``j % world_size`` and written atomically (a temporary file, then a rename) as
``features_piece_JJJJJJJ.safetensors`` in the layout of ``sslframe/eval/store.py``. A piece
already on disk is never embedded again, so a killed job resumes where it stopped, with the same
or another number of ranks, and no image is embedded twice. Every piece also records the SHA-256
of each sample's bytes (exact deduplication needs no second pass over the images) and, in its
metadata, the samples that could not be read or decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sslframe.data.loader import BadSample, views_item
from sslframe.data.shards import parse_sample, read_samples
from sslframe.distributed.collectives import barrier
from sslframe.distributed.shared_files import raise_on_every_rank, require_visible
from sslframe.errors import UserError
from sslframe.eval.features import trunk_features

PLAN_NAME = "embed_plan.json"


@dataclass(frozen=True)
class Piece:
    """Samples ``start`` .. ``stop - 1`` (global indices); ``url``: their tar shard, if any."""

    number: int
    start: int
    stop: int
    url: str = ""


def plan_pieces(source: Any, piece_size: int) -> list[Piece]:
    """The pieces of ``source``: its tar shards, or runs of ``piece_size`` samples."""
    if hasattr(source, "read"):
        if piece_size < 1:
            raise UserError(f"eval.piece_size must be >= 1, got {piece_size}")
        n = len(source)
        return [Piece(j, s, min(s + piece_size, n)) for j, s in enumerate(range(0, n, piece_size))]
    offsets = [int(o) for o in source.offsets]
    return [Piece(j, offsets[j], offsets[j + 1], source.url(j)) for j in range(len(source.shards))]


def piece_path(folder: Path, number: int) -> Path:
    return folder / f"features_piece_{number:07d}.safetensors"


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def piece_samples(source: Any, piece: Piece) -> Iterator[tuple[int, str, bytes | None, int, str]]:
    """``(index, key, bytes or None, label, why unreadable)`` for each sample of ``piece``."""
    if not piece.url:
        for i in range(piece.start, piece.stop):
            try:
                key, data, label = source.read(i)
            except Exception as exc:  # a missing or unreadable file is skipped and reported
                yield i, source.key(i), None, -1, _error(exc)
                continue
            yield i, key, data, label, ""
        return
    index = piece.start
    try:
        for sample in read_samples(piece.url):
            if index >= piece.stop:  # more samples than the index says: the rest belong to nobody
                yield index, piece.url, None, -1, "shard holds more samples than its index entry; extra ignored"
                return
            try:
                key, data, label = parse_sample(sample)
            except Exception as exc:  # a sample without an image member
                yield index, f"{piece.url}#{sample.get('__key__', '?')}", None, -1, _error(exc)
            else:
                yield index, f"{piece.url}#{key}", data, label, ""
            index += 1
    except Exception as exc:  # a truncated or corrupt tar: what was read counts, the rest is reported
        yield index, piece.url, None, -1, f"shard unreadable after {index - piece.start} samples ({_error(exc)})"


@dataclass
class Chunk:
    """Up to one batch of one piece, decoded by a loader worker."""

    number: int
    indices: torch.Tensor
    keys: list[str]
    digests: list[str]
    labels: torch.Tensor
    images: torch.Tensor | None
    skipped: list[tuple[str, str]]
    done: bool


class PieceStream(IterableDataset):
    """Decodes the given pieces, each worker taking every ``num_workers``-th piece, as chunks of
    ``batch_size``; a piece's last chunk has ``done`` set (and its unreadable samples)."""

    def __init__(self, source: Any, pieces: list[Piece], transform: Any, batch_size: int, decoder: str) -> None:
        self.source, self.pieces, self.transform = source, pieces, transform
        self.batch_size, self.decoder = batch_size, decoder

    def __iter__(self) -> Iterator[Chunk]:
        info = get_worker_info()
        mine = self.pieces if info is None else self.pieces[info.id :: info.num_workers]
        for piece in mine:
            good: list[tuple[int, str, str, int, torch.Tensor]] = []
            skipped: list[tuple[str, str]] = []
            for index, key, data, label, reason in piece_samples(self.source, piece):
                if data is None:
                    skipped.append((key, reason))
                    continue
                item = views_item(self.transform, 0, 0, index, key, data, label, self.decoder)
                if isinstance(item, BadSample):
                    skipped.append((item.key, item.reason))
                    continue
                good.append((index, key, hashlib.sha256(data).hexdigest(), label, item[0]))
                if len(good) == self.batch_size:
                    yield self._chunk(piece, good, [], done=False)
                    good = []
            yield self._chunk(piece, good, skipped, done=True)

    @staticmethod
    def _chunk(piece: Piece, good: list[Any], skipped: list[tuple[str, str]], done: bool) -> Chunk:
        return Chunk(
            number=piece.number,
            indices=torch.tensor([g[0] for g in good], dtype=torch.long),
            keys=[g[1] for g in good],
            digests=[g[2] for g in good],
            labels=torch.tensor([g[3] for g in good], dtype=torch.long),
            images=torch.stack([g[4] for g in good]) if good else None,
            skipped=skipped,
            done=done,
        )


@dataclass
class _Buffer:
    features: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _write_piece(folder: Path, number: int, buf: _Buffer, dim: int) -> int:
    count = len(buf.keys)
    if count:
        tensors = {
            "features": torch.cat(buf.features).float().contiguous(),
            "labels": torch.cat(buf.labels),
            "indices": torch.cat(buf.indices),
        }
    else:  # every sample unreadable: an empty piece still marks the piece as done
        tensors = {
            "features": torch.zeros(0, dim),
            "labels": torch.zeros(0, dtype=torch.long),
            "indices": torch.zeros(0, dtype=torch.long),
        }
    meta = {"keys": json.dumps(buf.keys), "sha256": json.dumps(buf.digests), "skipped": json.dumps(buf.skipped)}
    final = piece_path(folder, number)
    partial = final.with_suffix(".partial")
    save_file(tensors, str(partial), metadata=meta)
    os.replace(partial, final)
    return count


def _check_plan(folder: Path, plan: dict[str, Any], rank: int) -> None:
    """The folder's recorded plan must be this one: pieces of another source, trunk or piece
    size must never be mixed into one store. Every rank looks; one that finds another plan stops
    every rank (a node-local folder may hold a plan on some machines only)."""
    path = folder / PLAN_NAME
    error = None
    if path.is_file():
        recorded = json.loads(path.read_text())
        differs = [k for k in plan if recorded.get(k) != plan[k]]
        if differs:
            changes = ", ".join(f"{k} {recorded.get(k)!r} there, {plan[k]!r} now" for k in differs)
            error = (
                f"'{folder}' holds the embedding of another input ({changes}); resume with the same "
                "arguments or write to a new eval.out_dir"
            )
    raise_on_every_rank(error)
    if not path.is_file() and rank == 0:
        # Written whole, then renamed: another rank checking at the same moment sees no plan or all
        # of it, never a half-written file.
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(plan, indent=1))
        os.replace(partial, path)


@torch.no_grad()
def embed_source(
    trunk: torch.nn.Module,
    source: Any,
    folder: Path,
    transform: Any,
    *,
    plan: dict[str, Any],
    piece_size: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    layer: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    decoder: str = "torchvision",
) -> dict[str, Any]:
    """Embed this rank's pieces that are not on disk yet; rank 0 then writes ``index.json`` once
    every piece is there. ``plan`` (the source, trunk and settings) is recorded in ``embed_plan.json``
    and checked on resume. Returns counts (``embedded``: samples this rank embedded now)."""
    start = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    pieces = plan_pieces(source, piece_size)
    plan = {**plan, "piece_size": piece_size, "num_pieces": len(pieces), "num_samples": len(source)}
    _check_plan(folder, plan, rank)
    barrier()
    todo = [p for p in pieces if p.number % world_size == rank and not piece_path(folder, p.number).exists()]
    resumed = sum(1 for p in pieces if p.number % world_size == rank) - len(todo)
    trunk = trunk.to(device, memory_format=torch.channels_last).eval()
    loader = DataLoader(
        PieceStream(source, todo, transform, batch_size, decoder),
        batch_size=None,
        num_workers=min(num_workers, len(todo)),
        collate_fn=lambda chunk: chunk,
    )
    buffers: dict[int, _Buffer] = {}
    embedded = skipped = 0
    dim = 0
    for chunk in loader:
        buf = buffers.setdefault(chunk.number, _Buffer())
        if chunk.images is not None:
            images = chunk.images.to(device, memory_format=torch.channels_last)
            feats = trunk_features(trunk, images, layer).cpu()
            dim = feats.shape[1]
            buf.features.append(feats)
            buf.labels.append(chunk.labels)
            buf.indices.append(chunk.indices)
            buf.keys += chunk.keys
            buf.digests += chunk.digests
        buf.skipped += chunk.skipped
        if chunk.done:
            done = buffers.pop(chunk.number)
            embedded += _write_piece(folder, chunk.number, done, dim)
            skipped += len(done.skipped)
    # Every rank must see every piece (its own, resumed or new, and the others'): the same error
    # on every rank when the folder is not shared, instead of rank 0 stopping alone. Its first
    # collective waits for every rank to finish writing.
    names = [piece_path(folder, p.number).name for p in pieces]
    require_visible(folder, names, "embedding pieces", "eval.out_dir")
    if rank == 0:
        index = {**plan, "world_size": world_size, "shards": names}
        (folder / "index.json").write_text(json.dumps(index, indent=1))
    barrier()
    return {
        "embedded": embedded,
        "skipped": skipped,
        "pieces_done_before": resumed,
        "pieces_embedded": len(todo),
        "seconds": round(time.monotonic() - start, 1),
    }
