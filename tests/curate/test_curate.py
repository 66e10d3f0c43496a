"""Curation (tools/curate.py, sslframe/curate/): embedding that resumes after a kill and shares
its pieces across ranks, deduplication, balanced sampling, retrieval, and outputs that train."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslframe.command import main as command_main
from sslframe.curate.steps import load_pool
from sslframe.errors import UserError
from tests.distributed.harness import run_distributed
from tests.helpers import ROOT, make_image_folder, run_tool, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-step tiny run whose trunk embeds the test pools."""
    from sslframe.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("curate")
    make_image_folder(root / "train", classes=2, per_class=8, seed=0)
    Trainer(tiny_config(root / "train", root / "run", "trainer.max_steps=1")).fit()
    return root / "run"


def _embed(run: Path, data: Path, out: Path, *extra: str, source: str = "folder") -> dict:
    """``sslframe curate embed ...`` in this process (the command line's own path, without an
    interpreter start per call)."""
    args = [f"checkpoint={run}", f"data={source}", f"data.path={data}", f"eval.out_dir={out}"]
    assert command_main(["curate", "embed", *args, "eval.num_workers=0", "eval.batch_size=4", *extra]) == 0
    return json.loads((out / "embed.json").read_text())


def _curate(*args: str) -> dict:
    assert command_main(["curate", *args]) == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "report.json").read_text())


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A distinct random image: smooth noise at a random scale, 32 x 32 RGB."""
    coarse = rng.integers(0, 256, (int(rng.integers(4, 9)),) * 2 + (3,), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((32, 32), Image.BICUBIC))


def test_embed_resumes_after_a_kill_without_embedding_twice(run: Path, tmp_path: Path) -> None:
    """The embedding is killed (SIGKILL) while blocked on the 11th image, a named pipe: pieces
    0 and 1 (images 0-7) are on disk. The rerun embeds only the rest, and the result equals an
    uninterrupted embedding."""
    make_image_folder(tmp_path / "images", classes=1, per_class=24, seed=3)
    names = sorted((tmp_path / "images" / "class_0").iterdir())
    listing = tmp_path / "list.txt"
    pipe = tmp_path / "images" / "class_0" / "pipe.png"
    blocked = [str(p) for p in names[:10]] + [str(pipe)] + [str(p) for p in names[10:]]
    listing.write_text("\n".join(blocked) + "\n")
    os.mkfifo(pipe)
    out = tmp_path / "feats"
    args = ["checkpoint=" + str(run), "data=filelist", f"data.path={listing}", f"eval.out_dir={out}"]
    args += ["eval.num_workers=0", "eval.batch_size=2", "eval.piece_size=4"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "curate.py"), "embed", *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("features_piece_*.safetensors"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the embedding ended before the pipe"
            time.sleep(0.05)
        time.sleep(0.5)  # it is blocked opening the pipe: nothing more is written
        assert sorted(p.name for p in out.glob("features_piece_*")) == [
            "features_piece_0000000.safetensors",
            "features_piece_0000001.safetensors",
        ]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "index.json").exists()
    pipe.unlink()
    pipe.write_bytes((tmp_path / "images" / "class_0" / names[0].name).read_bytes())
    resumed = _embed(run, listing, out, "eval.piece_size=4", source="filelist")
    assert resumed["pieces_done_before"] == 2 and resumed["embedded"] == 25 - 8  # nothing embedded twice
    whole = _embed(run, listing, tmp_path / "whole", "eval.piece_size=4", source="filelist")
    assert whole["embedded"] == 25
    # The default encoder is not written into the plan: embeddings begun before eval.encoder
    # existed (their plans lack it) still resume.
    assert "encoder" not in json.loads((tmp_path / "whole" / "embed_plan.json").read_text())
    from sslframe.eval.store import read_features

    a, b = read_features(out), read_features(tmp_path / "whole")
    assert torch.equal(a.indices, torch.arange(25)) and a.keys == b.keys and a.hashes == b.hashes
    torch.testing.assert_close(a.features, b.features)
    # Resuming with other settings would mix two embeddings in one store: refused.
    proc = run_tool("curate.py", "embed", *args[:-1], "eval.piece_size=5")
    assert proc.returncode != 0 and "piece_size 4 there, 5 now" in proc.stderr


def _embed_share(rank: int, world: int, run: str, data: str, out: str) -> dict:
    from omegaconf import OmegaConf

    from sslframe.curate.embed import embed_source
    from sslframe.data.sources import build_source
    from sslframe.data.transforms import eval_transform
    from sslframe.eval.features import load_trunk

    trunk, cfg, _ = load_trunk(run)
    source = build_source(OmegaConf.create({"source": "folder"}), data)
    transform = eval_transform(cfg.transform.global_size, cfg.transform.mean, cfg.transform.std)
    return embed_source(
        trunk, source, Path(out), transform, plan={"path": data}, piece_size=5, batch_size=4, num_workers=0,
        device=torch.device("cpu"), rank=rank, world_size=world,
    )  # fmt: skip


def test_ranks_share_the_pieces(run: Path, tmp_path: Path) -> None:
    from sslframe.eval.store import read_features

    make_image_folder(tmp_path / "pool", classes=3, per_class=7, seed=1)  # 21 images: 5 pieces
    two = run_distributed(_embed_share, 2, str(run), str(tmp_path / "pool"), str(tmp_path / "two"))
    # Pieces 0, 2, 4 (5 + 5 + 1 images) on rank 0; pieces 1, 3 on rank 1.
    assert [r["embedded"] for r in two] == [11, 10] and [r["pieces_embedded"] for r in two] == [3, 2]
    one = _embed_share(0, 1, str(run), str(tmp_path / "pool"), str(tmp_path / "one"))
    assert one["embedded"] == 21
    a, b = read_features(tmp_path / "one"), read_features(tmp_path / "two")
    assert torch.equal(b.indices, torch.arange(21)) and a.keys == b.keys
    torch.testing.assert_close(a.features, b.features)


def _embed_on_a_disk_of_its_own(rank: int, world: int, run: str, data: str, out: str) -> str:
    """One rank embedding into a folder of its own, as when eval.out_dir is a node-local disk."""
    from sslframe.distributed import shared_files
    from sslframe.errors import UserError

    shared_files.VISIBLE_WITHIN_S = 0.5  # the other rank's pieces will never appear
    try:
        _embed_share(rank, world, run, data, f"{out}/node{rank}")
    except UserError as exc:
        return str(exc)
    return "embedded"


def test_ranks_need_a_folder_they_share(run: Path, tmp_path: Path) -> None:
    """Every rank stops with the same error (rank 0 alone stopping would leave the others waiting
    at a barrier), and no index lists a partial embedding."""
    make_image_folder(tmp_path / "pool", classes=3, per_class=7, seed=1)  # 5 pieces
    out = tmp_path / "out"
    errors = run_distributed(_embed_on_a_disk_of_its_own, 2, str(run), str(tmp_path / "pool"), str(out))
    assert errors[0] == errors[1]
    # Rank 0 wrote pieces 0, 2, 4 and cannot see rank 1's 1 and 3.
    assert "rank 0 cannot see 2 of the 5 embedding pieces" in errors[0]
    assert "eval.out_dir must be a folder that every rank shares" in errors[0]
    assert not list(out.glob("*/index.json"))
    # Only rank 1's disk holds an earlier embedding of other settings: both ranks refuse it.
    other = tmp_path / "other"
    (other / "node1").mkdir(parents=True)
    plan = json.loads((out / "node0" / "embed_plan.json").read_text())  # rank 0 records the plan
    (other / "node1" / "embed_plan.json").write_text(json.dumps({**plan, "piece_size": 7}))
    errors = run_distributed(_embed_on_a_disk_of_its_own, 2, str(run), str(tmp_path / "pool"), str(other))
    assert errors[0] == errors[1] and "holds the embedding of another input (piece_size 7 there, 5 now)" in errors[0]
    assert not (other / "node0" / "embed_plan.json").exists()


def test_dedup_finds_planted_copies_and_nothing_else(run: Path, tmp_path: Path) -> None:
    """60 distinct images, 8 byte-identical copies and 8 re-encoded near copies (JPEG at quality
    85, 3% brighter). Embedded as pixels, the copies are found and nothing else is merged."""
    rng = np.random.default_rng(0)
    pool = tmp_path / "pool"
    pool.mkdir()
    images = [_texture(rng) for _ in range(60)]
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(pool / f"img{i:03d}.png")
    for j in range(8):
        (pool / f"img{j:03d}_copy.png").write_bytes((pool / f"img{j:03d}.png").read_bytes())
        brighter = np.clip(images[10 + j].astype(np.float32) * 1.03, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(brighter).save(buffer, format="JPEG", quality=85)
        (pool / f"img{10 + j:03d}_near.jpg").write_bytes(buffer.getvalue())
    _embed(run, pool, tmp_path / "pixels", "eval.raw_pixels=true")
    report = _curate(
        "dedup", "--features", str(tmp_path / "pixels"), "--out", str(tmp_path / "d"), "--threshold", "0.95"
    )
    assert report["exact_duplicates_removed"] == 8 and report["exact_groups"] == 8
    assert report["near_duplicates_removed"] == 8 and report["near_groups"] == 8
    kept = {Path(line.split()[0]).name for line in (tmp_path / "d" / "files.txt").read_text().splitlines()}
    assert kept == {f"img{i:03d}.png" for i in range(60)}  # the originals sort first and are kept


def test_near_duplicate_groups_do_not_chain() -> None:
    """a ~ b and b ~ c, but a and c are further apart than the threshold: b joins a's group and
    c stays (connected components would have merged all three)."""
    from sslframe.curate.dedup import deduplicate

    angle = np.deg2rad([0.0, 10.0, 20.0, 90.0])
    x = np.stack([np.cos(angle), np.sin(angle), np.zeros(4)], axis=1).astype(np.float32)
    threshold = float(np.cos(np.deg2rad(12.0)))  # 10 degrees apart: duplicates; 20: not
    result = deduplicate(x, [], threshold, k=3)
    assert result.keep.tolist() == [True, False, True, True] and result.near_groups == [[0, 1]]
    # The same rows with the first two byte-identical: an exact group, then no near group is left
    # for row 1 (it is gone), and row 2 is 20 degrees from row 0.
    result = deduplicate(x, ["h0", "h0", "h2", "h3"], threshold, k=3)
    assert result.exact_groups == [[0, 1]] and result.near_groups == [] and result.keep.tolist() == [1, 0, 1, 1]
    assert result.report()["exact_duplicates_removed"] == 1


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_large_pool_indexes_find_planted_copies_and_nothing_else(kind: str) -> None:
    """The indexes meant for large pools (an inverted file, and 4-bit product-quantised codes)
    deduplicate like the exact one: 200 planted near copies (cosine about 0.995 to their original)
    among 6000 random 64-d vectors (nearest-neighbour cosines of random 64-d directions stay far
    below 0.9) are all found, each in a group with its original, and no other row is removed; the
    threshold is applied to exact cosines, since 4-bit codes score copies low."""
    from sslframe.curate.dedup import deduplicate
    from sslframe.curate.search import IndexSpec

    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (6000, 64)).astype(np.float32)
    originals = rng.choice(len(base), 200, replace=False)
    copies = base[originals] + 0.1 * rng.normal(0, 1, (200, 64)).astype(np.float32)
    x = np.concatenate([base, copies])
    result = deduplicate(x, [], threshold=0.95, k=8, spec=IndexSpec(kind=kind, nprobe=16, pq_m=16))
    assert sorted(sorted(g) for g in result.near_groups) == sorted([int(o), 6000 + i] for i, o in enumerate(originals))
    assert result.keep[:6000].all() and not result.keep[6000:].any()


def _long_tail(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten tight clusters on random directions of a 32-d space, 2000 down to 20 points (100:1)."""
    rng = np.random.default_rng(seed)
    sizes = [2000, 1000, 500, 250, 120, 60, 40, 30, 25, 20]
    centres = rng.normal(0, 1, (10, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.concatenate(
        [c + 0.25 / np.sqrt(32) * rng.normal(0, 1, (n, 32)) for c, n in zip(centres, sizes, strict=True)]
    )
    return x.astype(np.float32), np.repeat(np.arange(10), sizes)


def test_balanced_sampling_flattens_a_long_tail() -> None:
    from sslframe.curate.cluster import balanced_sample, default_levels, hierarchical_kmeans, split_evenly

    x, y = _long_tail(0)
    levels = default_levels(len(x))
    assert levels == [202, 20]
    hier = hierarchical_kmeans(x, levels, resampling_steps=1, resample_size=10, seed=0)
    rows = balanced_sample(hier, x, 400, seed=0)
    assert len(rows) == 400 and len(set(rows.tolist())) == 400
    counts = np.bincount(y[rows], minlength=10)
    # Bounds: each planted cluster gets at least half its fair share of 40 (the smallest has only
    # 20 points: all of them) and at most 2.5 times it; largest/smallest 100:1 before, <= 5 after.
    assert counts.min() >= 20 and counts.max() <= 100 and counts.max() / counts.min() <= 5
    # A random sample of the same size keeps the tail (the reference the sampler must beat).
    rand = np.bincount(y[np.random.default_rng(0).choice(len(x), 400, replace=False)], minlength=10)
    assert rand.max() / max(rand.min(), 1) >= 20
    # Water-filling: small bins give everything, the rest is split evenly.
    assert split_evenly(10, np.array([1, 100, 100]), np.random.default_rng(0)).tolist() in ([1, 5, 4], [1, 4, 5])
    assert split_evenly(500, np.array([3, 4]), np.random.default_rng(0)).tolist() == [3, 4]


def test_retrieval_takes_each_seeds_nearest() -> None:
    from sslframe.curate.retrieve import retrieve

    x, y = _long_tail(1)
    seeds = np.stack([x[y == c][0] for c in (5, 9)])  # one image of two tail clusters
    rows, report = retrieve(x, seeds, 60)
    # Cluster 9 has 20 points and 5 has 60: each seed contributes 30, cluster 9's 20 and then the
    # nearest others, so every point of cluster 9 and 30+ of cluster 5 are taken.
    assert len(rows) == 60 and report["seeds"] == 2
    assert (y[rows] == 9).sum() == 20 and (y[rows] == 5).sum() >= 30
    with pytest.raises(UserError, match="differ in width"):
        retrieve(x, seeds[:, :16], 10)


def test_outputs_train_from_folders_and_shards(run: Path, tmp_path: Path) -> None:
    """balance over an embedded folder writes a file list and shards, retrieve over embedded tar
    shards writes shards; a run trains on each."""
    from sslframe.engine.trainer import Trainer

    make_image_folder(tmp_path / "pool", classes=4, per_class=10, seed=2)
    _embed(run, tmp_path / "pool", tmp_path / "feats", "eval.piece_size=7")
    report = _curate(
        "balance", "--features", str(tmp_path / "feats"), "--out", str(tmp_path / "b"), "--target", "16",
        "--levels", "8,2", "--shards", str(tmp_path / "b_shards"), "--per-shard", "5",
    )  # fmt: skip
    assert report["selected"] == 16 and sum(report["top_cluster_sizes_after"]) == 16
    assert sum(report["labels_after"].values()) == 16 and report["shards"]["written"] == 16
    lines = (tmp_path / "b" / "files.txt").read_text().splitlines()
    assert len(lines) == 16 and all(Path(line.split()[0]).is_file() for line in lines)
    files = tmp_path / "b" / "files.txt"
    result = Trainer(
        tiny_config(tmp_path, tmp_path / "r1", "data=filelist", f"data.path={files}", "trainer.max_steps=2")
    ).fit()
    assert result.final_step == 2
    # The pool as tar shards: embedded shard by shard, and the selection streamed into new shards.
    _embed(run, tmp_path / "b_shards", tmp_path / "feats_shards", source="shards")
    seeds = tmp_path / "seed_img"
    make_image_folder(seeds, classes=1, per_class=2, seed=5)
    _embed(run, seeds, tmp_path / "feats_seeds")
    report = _curate(
        "retrieve", "--features", str(tmp_path / "feats_shards"), "--seeds", str(tmp_path / "feats_seeds"),
        "--out", str(tmp_path / "r"), "--target", "6", "--shards", str(tmp_path / "r_shards"), "--per-shard", "4",
    )  # fmt: skip
    assert report["files"] is None and report["shards"]["written"] == 6
    result = Trainer(tiny_config(tmp_path, tmp_path / "r2", "data=shards", f"data.path={tmp_path / 'r_shards'}",
                                 "trainer.max_steps=1", "data.batch_size=4")).fit()  # fmt: skip
    assert result.final_step == 1
    # A selection of another pool cannot restrict these features.
    with pytest.raises(UserError, match="both must embed the same pool"):
        load_pool(tmp_path / "feats", tmp_path / "r")


def test_command_line_errors(capsys) -> None:
    assert command_main(["curate", "sort"]) == 2
    assert "valid choices: embed, dedup, balance, retrieve" in capsys.readouterr().err
    assert command_main(["curate", "dedup", "--features", "/nonexistent", "--out", "/tmp/never"]) == 2
    assert "is not an embedding" in capsys.readouterr().err
    assert command_main(["curate", "embed", "checkpoint=/nonexistent", "data=folder", "data.path=/tmp"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
