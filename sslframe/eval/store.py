"""Features on disk: each rank writes its share in safetensors shards; one index per split.

Layout of ``DIR/<split>/``: ``features_rank_RRRRR_shard_SSSS.safetensors`` (tensors
``features`` float32, ``labels`` and ``indices`` int64; the sample keys in the file's metadata)
and ``index.json`` (written by rank 0 once every rank is done). Reading back sorts by dataset
index, so the result does not depend on the number of ranks that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sslframe.distributed.collectives import barrier
from sslframe.distributed.shared_files import require_everywhere
from sslframe.errors import UserError


@dataclass
class FeatureSet:
    features: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    keys: list[str]
    # SHA-256 of each sample's bytes (features written by tools/curate.py embed; empty otherwise).
    hashes: list[str] = field(default_factory=list)
    # (key, reason) of the samples that could not be read (tools/curate.py embed).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # What ``index.json`` records of the extraction (checkpoint, layer, encoder...; cached features only).
    meta: dict[str, Any] = field(default_factory=dict)


# The files of one rank's share; ``index.json`` beside them lists every rank's.
SHARD_GLOB = "features_rank_*_shard_*.safetensors"


def holds_features(folder: Path) -> bool:
    """Whether ``folder`` holds an extraction: a finished one (``index.json``) or the shards of one
    that stopped before writing its index."""
    return (folder / "index.json").is_file() or any(folder.glob(SHARD_GLOB))


def clear_features(folder: Path) -> None:
    """Remove an extraction from ``folder``: its index first, so that a kill midway leaves shards
    without an index (an unfinished extraction) rather than an index naming missing shards; then
    every shard, so none of a wider or finer earlier extraction is listed with the next one. Other
    files are left alone."""
    (folder / "index.json").unlink(missing_ok=True)
    for shard in folder.glob(SHARD_GLOB):
        shard.unlink()


def write_shards(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    keys_of: Any,
    folder: Path,
    rank: int,
    shard_size: int,
    meta: dict[str, Any],
    world_size: int = 1,
) -> int:
    """Write this rank's batches as shards of at most ``shard_size`` samples; rank 0 then writes
    ``index.json`` listing every rank's shards, once every rank sees them all (``folder`` must be
    shared by the ranks: a clear error on every rank otherwise). ``keys_of(index)`` names a
    sample. Returns samples written."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    shard, count, pending = 0, 0, 0
    written: list[str] = []

    def flush() -> None:
        nonlocal shard, buffer, pending
        feats, labels, idx = (torch.cat(parts) for parts in zip(*buffer, strict=True))
        keys = [keys_of(int(i)) for i in idx]
        path = folder / f"features_rank_{rank:05d}_shard_{shard:04d}.safetensors"
        tensors = {"features": feats.float().contiguous(), "labels": labels.long(), "indices": idx.long()}
        save_file(tensors, str(path), metadata={"keys": json.dumps(keys)})
        written.append(path.name)
        shard, buffer, pending = shard + 1, [], 0

    for feats, labels, idx in batches:
        for start in range(0, len(idx), shard_size):
            part = tuple(t[start : start + shard_size] for t in (feats, labels, idx))
            if pending + len(part[2]) > shard_size:
                flush()
            buffer.append(part)
            pending += len(part[2])
            count += len(part[2])
    if buffer:
        flush()
    # Gathering the names waits for every rank to finish writing.
    shards = require_everywhere(folder, written, "feature shards", "eval.out_dir")
    if rank == 0:
        index = {**meta, "world_size": world_size, "shards": sorted(shards)}
        (folder / "index.json").write_text(json.dumps(index, indent=1))
    barrier()
    return count


def read_features(folder: str | Path) -> FeatureSet:
    """Every shard listed in ``folder/index.json``, concatenated in dataset order."""
    folder = Path(folder)
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise UserError(f"'{folder}' holds no extracted features (no index.json); run tools/eval.py extract first")
    try:
        index = json.loads(index_path.read_text())
        parts, keys, hashes, skipped = [], [], [], []
        for name in index["shards"]:
            with safe_open(str(folder / Path(name).name), framework="pt") as f:
                meta = f.metadata()
                skipped += [tuple(s) for s in json.loads(meta.get("skipped", "[]"))]
                part = [f.get_tensor(t) for t in ("features", "labels", "indices")]
                if len(part[2]) == 0:
                    continue  # a piece whose every sample was unreadable
                parts.append(part)
                keys += json.loads(meta["keys"])
                hashes += json.loads(meta.get("sha256", "[]"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"features in '{folder}' are unreadable: {str(exc).splitlines()[0]}") from None
    if not parts:
        raise UserError(f"'{folder}' lists no feature shards")
    feats, labels, indices = (torch.cat(p) for p in zip(*parts, strict=True))
    order = indices.argsort()
    rows = order.tolist()
    if hashes and len(hashes) != len(keys):
        raise UserError(f"features in '{folder}' mix pieces with and without content hashes")
    ordered_hashes = [hashes[i] for i in rows] if hashes else []
    recorded = {k: v for k, v in index.items() if k != "shards"}
    return FeatureSet(
        feats[order], labels[order], indices[order], [keys[i] for i in rows], ordered_hashes, skipped, recorded
    )
