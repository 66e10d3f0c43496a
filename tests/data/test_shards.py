"""Tar shards: make_shards round trip, the stream's order (deterministic, disjoint across ranks
and workers, resumable by skipping without decoding) and broken samples inside shards."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import sslframe.data.shards as shards_module
from sslframe.config.schema import DataConfig
from sslframe.data.build import build_eval_loader, build_train_data
from sslframe.data.loader import BadSample
from sslframe.data.shard_writer import write_shards
from sslframe.data.shards import ShardedImageStream, ShardIndex, count_samples, read_samples, worker_span
from sslframe.data.sources import ImageFolderSource
from sslframe.errors import UserError
from tests.helpers import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("shard_images"))


@pytest.fixture(scope="module")
def shard_dir(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 32 images in source order, 5 per shard (7 shards, the last with 2)."""
    out = tmp_path_factory.mktemp("shards") / "set"
    write_shards(ImageFolderSource(folder), str(out), per_shard=5, seed=None)
    return out


def data_cfg(path: Path | str, **values: object) -> DataConfig:
    return OmegaConf.structured(DataConfig(source="shards", path=str(path), **values))


def epoch_batches(data: object, epoch: int, start: int = 0) -> list[list[int]]:
    data.set_position(epoch, start)
    return [b.indices.tolist() for b in data]


def test_make_shards_round_trip_keeps_images_and_labels(folder: Path, shard_dir: Path) -> None:
    source = ImageFolderSource(folder)
    index = ShardIndex(f"file://{shard_dir}")
    assert [s.count for s in index.shards] == [5] * 6 + [2] and len(index) == 32
    assert index.classes == ["class_0", "class_1"]
    samples = [s for i in range(len(index.shards)) for s in read_samples(index.url(i))]
    for (key, data, label), sample in zip((source.read(i) for i in range(32)), samples, strict=True):
        assert sample["png"] == data and int(sample["cls"]) == label, key
    # Member names are derived keys, never the source's paths.
    with tarfile.open(shard_dir / "shard-000000.tar") as tar:
        assert sorted(tar.getnames()) == [f"{i:09d}.{ext}" for i in range(5) for ext in ("cls", "png")]
    assert [count_samples(index.url(i)) for i in range(len(index.shards))] == [s.count for s in index.shards]


def test_make_shards_resizes_to_max_side_and_sizes_shards_in_mb(tmp_path: Path) -> None:
    big = make_image_folder(tmp_path / "big", classes=1, per_class=6, size=64)
    report = write_shards(ImageFolderSource(big), str(tmp_path / "small"), max_mb=0.004, max_side=24, quality=80)
    assert report.resized == 6 and report.written == 6
    index = ShardIndex(str(tmp_path / "small"))
    # Each 24 px JPEG (~1 kB) plus its tar headers (~2 kB) fills most of a 4 kB shard.
    assert len(index.shards) == 6
    for i in range(len(index.shards)):
        for sample in read_samples(index.url(i)):
            with Image.open(io.BytesIO(sample["jpg"])) as image:
                assert image.size == (24, 24) and image.format == "JPEG"
            assert sample["cls"] == b"0"


def test_make_shards_refuses_no_size_and_an_existing_index(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="shard size"):
        write_shards(ImageFolderSource(folder), str(tmp_path / "x"))
    write_shards(ImageFolderSource(folder), str(tmp_path / "once"), per_shard=100)
    with pytest.raises(UserError, match="already holds a shard index"):
        write_shards(ImageFolderSource(folder), str(tmp_path / "once"), per_shard=100)


@pytest.mark.parametrize("bad", [{"format": "x"}, {"format": "sslframe-shards/1", "shards": [{"name": "../a.tar"}]}])
def test_bad_index_is_a_user_error(tmp_path: Path, bad: dict) -> None:
    (tmp_path / "index.json").write_text(json.dumps(bad))
    with pytest.raises(UserError):
        ShardIndex(str(tmp_path))
    with pytest.raises(UserError, match="cannot read the shard index"):
        ShardIndex(str(tmp_path / "absent"))


def test_worker_spans_tile_the_rank_share() -> None:
    for samples, batch, drop_last, workers in [(37, 4, True, 3), (37, 4, False, 3), (8, 4, True, 4), (50, 5, True, 2)]:
        spans = [worker_span(samples, batch, drop_last, workers, w) for w in range(workers)]
        assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert spans[-1][1] == (samples // batch * batch if drop_last else samples)


@pytest.mark.parametrize(("world", "workers"), [(1, 3), (2, 2), (3, 1)])
def test_plan_is_deterministic_and_disjoint_across_ranks_and_workers(shard_dir: Path, world: int, workers: int) -> None:
    index = ShardIndex(str(shard_dir))

    def planned(epoch: int) -> list[list[int]]:
        out = []
        for rank in range(world):
            stream = ShardedImageStream(index, None, 7, 2, rank, world, shuffle_buffer=3)
            for worker in range(workers):
                pieces, order = stream.plan(epoch, 0, worker, workers)
                ids = [int(index.offsets[s]) + m for s, first, stop in pieces for m in range(first, stop)]
                out.append([ids[p] for p in order])
        return out

    first = planned(epoch=1)
    assert first == planned(epoch=1)
    flat = [i for ids in first for i in ids]
    per_rank = 32 // world // 2 * 2
    assert len(flat) == len(set(flat)) == per_rank * world
    assert planned(epoch=2) != first


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_disjoint_across_ranks_and_equal_in_steps(shard_dir: Path, workers: int) -> None:
    cfg = data_cfg(shard_dir, batch_size=3, num_workers=workers, shuffle_buffer=4, persistent_workers=False)
    ranks = [epoch_batches(build_train_data(cfg, None, 5, rank, 2), epoch=0) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 16 // 3
    seen = [i for batches in ranks for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 2 * (16 // 3) * 3


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_equals_iterate_and_discard_without_decoding_what_it_skips(
    shard_dir: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = data_cfg(shard_dir, batch_size=2, num_workers=workers, shuffle_buffer=3, persistent_workers=workers > 0)
    data = build_train_data(cfg, None, 11, 0, 1)
    full = epoch_batches(data, epoch=2)
    assert len(full) == 16 and sorted(i for b in full for i in b) == list(range(32))
    for start in (1, 5, 15):
        assert epoch_batches(data, 2, start) == full[start:], start
    assert epoch_batches(data, 2) == full  # persistent workers see the new position too
    if workers:
        return
    decoded, opened = [], []
    real_item, real_read = shards_module.views_item, shards_module.read_samples
    monkeypatch.setattr(shards_module, "views_item", lambda *a: decoded.append(a[3]) or real_item(*a))
    monkeypatch.setattr(shards_module, "read_samples", lambda url: opened.append(url) or real_read(url))
    assert epoch_batches(data, 2, 12) == full[12:]
    assert sorted(decoded) == sorted(i for b in full[12:] for i in b)
    assert len(opened) < 7, "shards holding only skipped samples are not opened"


def test_eval_loader_reads_every_sample_once(shard_dir: Path) -> None:
    loader = build_eval_loader(data_cfg(shard_dir), str(shard_dir), lambda x: x.float(), 5, 2)
    indices = torch.cat([b.indices for b in loader])
    assert sorted(indices.tolist()) == list(range(32))


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_broken_members_and_truncated_shards_become_counted_bad_samples(tmp_path: Path) -> None:
    good = _jpeg(0)
    members = {
        "000.jpg": good,
        "001.jpg": good[: len(good) // 2],  # truncated JPEG
        "002.jpg": b"",  # zero bytes
        "003.jpg": b"just some text, named .jpg",
        "004.txt": b"a sample without an image",
        "005.jpg": good,
    }
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for name, data in members.items():
            _add(tar, name, data)
            _add(tar, name.split(".")[0] + ".cls", b"1")
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        for i in range(4):
            _add(tar, f"{i:03d}.jpg", _jpeg(i))
    raw = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(raw[: len(raw) // 2])  # a shard cut off mid-way
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "format": "sslframe-shards/1",
                "shards": [{"name": "a.tar", "count": 6}, {"name": "b.tar", "count": 4}, {"name": "c.tar", "count": 2}],
            }
        )
    )
    cfg = data_cfg(tmp_path, batch_size=4, num_workers=0, drop_last=False)
    data = build_train_data(cfg, lambda x: [x.float()], 0, 0, 1)
    data.set_position(0, 0)
    batches = list(data)
    good_count = sum(b.size for b in batches)
    bad = {b.key: b.reason for batch in batches for b in batch.bad}
    assert good_count + len(bad) == 12
    assert {"a.tar/001", "a.tar/002", "a.tar/003", "a.tar/004", "c.tar[0]", "c.tar[1]"} <= set(bad)
    assert "no image member" in bad["a.tar/004"] and "shard unreadable" in bad["c.tar[0]"]
    assert {k for k in bad if k.startswith("b.tar")}, "the truncated shard's lost samples are reported"
    assert all(isinstance(r, str) and r for r in bad.values())
    assert all(isinstance(b, BadSample) for batch in batches for b in batch.bad)
