"""Write a folder or file list of images as tar shards in the WebDataset layout, with an index.

Each sample becomes ``<key>.<ext>`` (the image) and, when labelled, ``<key>.cls`` (the label as
ASCII digits); keys are the sample's zero-padded number, so member names never carry a path.
The index (``index.json``, written last) records every shard's sample count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
from PIL import Image
from webdataset import TarWriter

from sslframe.data.shards import IMAGE_KEYS, Shard, index_url, write_index
from sslframe.errors import UserError

# Bytes a tar member costs beyond its data: a 512-byte header, data padded to 512 bytes.
_MEMBER_OVERHEAD = 1024


@dataclass
class ShardReport:
    index: str
    shards: list[Shard]
    written: int = 0
    resized: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def shrink(data: bytes, max_side: int, quality: int) -> bytes | None:
    """JPEG re-encoding of an image whose longer side exceeds ``max_side`` (aspect kept), or
    None when it already fits. Raises on undecodable bytes."""
    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= max_side:
            image.verify()
            return None
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _extension(key: str) -> str:
    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    return ext if ext in IMAGE_KEYS else "jpg"


def write_shards(
    source: Any,
    out: str,
    max_mb: float = 0.0,
    per_shard: int = 0,
    max_side: int = 0,
    quality: int = 90,
    seed: int | None = 0,
) -> ShardReport:
    """Write every sample of a map-style ``source`` into shards under ``out`` (a local folder or
    fsspec URL). A shard closes before it would pass ``max_mb`` megabytes or ``per_shard``
    samples. ``max_side`` > 0 re-encodes larger images as JPEG at ``quality``; ``seed`` shuffles
    the samples before writing (None keeps the source order)."""
    if max_mb <= 0 and per_shard <= 0:
        raise UserError("give a shard size: --max-mb MB or --per-shard N")
    if max_side < 0 or not 1 <= quality <= 100:
        raise UserError("--max-side must be >= 0 and --quality within 1..100")
    fs, root = fsspec.core.url_to_fs(out)
    if fs.exists(index_url(root)):
        raise UserError(f"'{out}' already holds a shard index; write to a new folder")
    fs.makedirs(root, exist_ok=True)
    order = np.arange(len(source)) if seed is None else np.random.default_rng(seed).permutation(len(source))
    limit = max_mb * 1e6 if max_mb > 0 else float("inf")
    report = ShardReport(index="", shards=[])
    writer: TarWriter | None = None
    handle: Any = None
    count = size = 0

    def close() -> None:
        if writer is not None:
            writer.close()
            handle.close()
            report.shards.append(Shard(f"shard-{len(report.shards):06d}.tar", count))

    for index in order:
        try:
            key, data, label = source.read(int(index))
            if max_side > 0:
                smaller = shrink(data, max_side, quality)
                if smaller is not None:
                    data, key = smaller, "resized.jpg"
                    report.resized += 1
        except Exception as exc:  # an unreadable input is left out and reported
            report.skipped.append((source.key(int(index)), f"{type(exc).__name__}: {exc}"))
            continue
        cost = len(data) + 2 * _MEMBER_OVERHEAD
        if writer is None or (count > 0 and (size + cost > limit or count == per_shard)):
            close()
            handle = fs.open(f"{root}/shard-{len(report.shards):06d}.tar", "wb")
            writer, count, size = TarWriter(handle, encoder=False), 0, 0
        sample = {"__key__": f"{report.written:09d}", _extension(key): data}
        if label >= 0:
            sample["cls"] = str(label).encode("ascii")
        writer.write(sample)
        count, size, report.written = count + 1, size + cost, report.written + 1
    if writer is None:
        raise UserError("no readable image to write")
    close()
    report.index = write_index(out, report.shards, getattr(source, "classes", []))
    return report
