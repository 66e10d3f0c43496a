"""Evaluation tasks behind ``tools/eval.py``; results go to JSON next to the checkpoint's run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchvision.transforms import v2

from sslframe.data.loader import EpochSampler, ViewsDataset, make_loader
from sslframe.data.sources import build_source
from sslframe.data.transforms import eval_transform
from sslframe.distributed.collectives import barrier
from sslframe.distributed.device import pick_device
from sslframe.distributed.env import init_distributed
from sslframe.distributed.shared_files import raise_on_every_rank
from sslframe.errors import UserError
from sslframe.eval.features import (
    RawPixels,
    eval_batches,
    iter_features,
    load_trunk,
    recalibrate_batch_norm,
    trunk_features,
)
from sslframe.eval.finetune import Classifier, build_finetune_optimizer, train_finetune
from sslframe.eval.interchange import load_trunk_weights, trunk_for_arch
from sslframe.eval.knn import knn_accuracy
from sslframe.eval.linear import EpochBatches, ProbeSettings, evaluate, linear_probe, topk_accuracy, train_linear
from sslframe.eval.lowshot import lowshot, subset_sizes
from sslframe.eval.store import FeatureSet, clear_features, holds_features, read_features, write_shards
from sslframe.models.trunks import Trunk
from sslframe.registry import Registry

log = logging.getLogger(__name__)

TASKS: Registry[Callable[[DictConfig], dict[str, Any]]] = Registry("evaluation")


@dataclass
class Pretrained:
    """The trunk under evaluation and how its run preprocessed images."""

    trunk: Trunk
    checkpoint: Path
    size: int
    mean: list[float]
    std: list[float]
    device: torch.device

    @property
    def eval_dir(self) -> Path:
        """RUN_DIR/eval for a checkpoint of a run; next to an imported weights file otherwise."""
        if self.checkpoint.is_file():
            return self.checkpoint.parent / "eval" / self.checkpoint.stem
        return self.checkpoint.parent.parent / "eval"


# Torchvision's ImageNet normalisation, which published torchvision/timm/SwAV/DINO/SEER weights expect.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _pretrained(cfg: DictConfig) -> Pretrained:
    ev = cfg.eval
    if ev.layout and ev.raw_pixels:
        raise UserError("eval.raw_pixels=true needs a run's checkpoint (its evaluation view), not eval.layout")
    if ev.layout and ev.encoder != "student":
        raise UserError(
            f"eval.encoder={ev.encoder} picks the weights of an sslframe run's checkpoint; a file of another "
            "project is read as its eval.layout says (layout dino: the teacher)"
        )
    if ev.layout:
        trunk = trunk_for_arch(ev.arch)
        if not ev.random_init:
            report = load_trunk_weights(trunk, cfg.checkpoint, ev.layout)
            log.info("loaded %s as %s: %s", cfg.checkpoint, ev.layout, report.summary())
        path = Path(cfg.checkpoint).resolve()
        return Pretrained(trunk.eval(), path, ev.image_size or 224, IMAGENET_MEAN, IMAGENET_STD, pick_device(ev.device))
    trunk, run_cfg, folder = load_trunk(cfg.checkpoint, random_init=ev.random_init or ev.raw_pixels, encoder=ev.encoder)
    if ev.raw_pixels:
        if ev.layer >= 0:
            raise UserError("eval.raw_pixels=true evaluates the images themselves; drop eval.layer")
        trunk = RawPixels()
    tf = run_cfg.transform
    size = ev.image_size or tf.global_size
    return Pretrained(trunk, folder, size, list(tf.mean), list(tf.std), pick_device(ev.device))


def _recalibrate(cfg: DictConfig, model: Pretrained, rank: int = 0, world_size: int = 1) -> None:
    """``eval.precise_bn_images=N``: the trunk's batch-norm statistics re-estimated on the first N
    images of data.path (the evaluation view; under torchrun each rank its strided share) before
    any feature is computed (``recalibrate_batch_norm``)."""
    ev = cfg.eval
    if ev.precise_bn_images < 0:
        raise UserError(f"eval.precise_bn_images must be 0 (off) or a number of images, got {ev.precise_bn_images}")
    if ev.precise_bn_images == 0:
        return
    if ev.raw_pixels:
        raise UserError("eval.precise_bn_images re-estimates a trunk's batch norm; eval.raw_pixels=true has no trunk")
    transform = eval_transform(model.size, model.mean, model.std)
    trunk = model.trunk.to(model.device, memory_format=torch.channels_last)
    images = (
        b.views[0].to(model.device, memory_format=torch.channels_last)
        for b in eval_batches(cfg.data, cfg.data.path, transform, ev.batch_size, ev.num_workers, rank, world_size)
    )
    share = -(-int(ev.precise_bn_images) // world_size)
    used = recalibrate_batch_norm(trunk, images, share)
    log.info("batch-norm statistics re-estimated on %d images of %s (rank %d)", used, cfg.data.path, rank)


def _layer(ev: DictConfig) -> int | None:
    return None if ev.layer < 0 else int(ev.layer)


def _split_path(cfg: DictConfig, split: str) -> str:
    if split == "train":
        return cfg.data.path
    if split == "val":
        if not cfg.data.val_path:
            raise UserError("this evaluation needs a held-out split: set data.val_path=DIR")
        return cfg.data.val_path
    raise UserError(f"unknown split '{split}'; valid choices: train, val")


def _fresh_features(cfg: DictConfig, model: Pretrained, split: str) -> FeatureSet:
    ev = cfg.eval
    transform = eval_transform(model.size, model.mean, model.std)
    args = (ev.batch_size, ev.num_workers, model.device, _layer(ev))
    parts = list(iter_features(model.trunk, cfg.data, _split_path(cfg, split), transform, *args))
    if not parts:
        raise UserError(f"no readable images in the {split} split")
    feats, labels, indices = (torch.cat(p) for p in zip(*parts, strict=True))
    return FeatureSet(feats, labels, indices, [str(i) for i in indices.tolist()])


def _labelled_splits(cfg: DictConfig, model: Pretrained | None) -> tuple[FeatureSet, FeatureSet]:
    """Train and val features: cached ones from ``eval.features`` or freshly extracted."""
    if cfg.eval.features:
        train, val = (read_features(Path(cfg.eval.features) / s) for s in ("train", "val"))
        _same_extraction(train, val, cfg.eval.features)
    else:
        assert model is not None
        train, val = (_fresh_features(cfg, model, s) for s in ("train", "val"))
    if (train.labels < 0).any() or (val.labels < 0).any():
        raise UserError("this evaluation needs labelled images (class sub-folders) in data.path and data.val_path")
    return train, val


# What must agree between the train/ and val/ halves of cached features (when both record it).
_EXTRACTION_KEYS = ("checkpoint", "layer", "encoder", "random_init", "raw_pixels", "precise_bn_images")


def _same_extraction(train: FeatureSet, val: FeatureSet, folder: str) -> None:
    """Train and val features from different trunks (or layers, or sources) would be compared as
    if they were one space; refuse them, naming what differs."""
    differ = [
        key for key in _EXTRACTION_KEYS if key in train.meta and key in val.meta and train.meta[key] != val.meta[key]
    ]
    if differ:
        shown = "; ".join(f"{key}: train {train.meta[key]}, val {val.meta[key]}" for key in differ)
        raise UserError(
            f"train/ and val/ in '{folder}' come from different extractions ({shown}); extract both "
            "splits again in one run (tools/eval.py extract eval.overwrite=true)"
        )


def _source_of(cfg: DictConfig) -> tuple[Pretrained | None, str]:
    """The trunk (None when cached features are used) and how to name the source in results."""
    if cfg.eval.features:
        if cfg.eval.precise_bn_images > 0:
            raise UserError(
                "eval.precise_bn_images applies when features are computed from images; drop eval.features, or "
                "extract the features with it (tools/eval.py extract eval.precise_bn_images=N)"
            )
        return None, str(Path(cfg.eval.features).resolve())
    model = _pretrained(cfg)
    _recalibrate(cfg, model)
    return model, str(model.checkpoint)


# What features were computed from (the run's trained student by default; its momentum copy, the
# network at random init, or the images themselves), recorded in results and extractions.
_SOURCE_DEFAULTS = {"encoder": "student", "random_init": False, "raw_pixels": False, "precise_bn_images": 0}


def _provenance(cfg: DictConfig, cached: FeatureSet | None = None) -> dict[str, Any]:
    """``encoder``, ``random_init`` and ``raw_pixels`` of the evaluated features: as configured when
    the task computes them, as the extraction recorded them when they come from ``eval.features``
    (extractions older than that record keep the configured labels). A setting that asks for other
    features than the cached ones is an error, not a relabelling."""
    ev = cfg.eval
    asked = {
        "encoder": str(ev.encoder),
        "random_init": bool(ev.random_init),
        "raw_pixels": bool(ev.raw_pixels),
        "precise_bn_images": int(ev.precise_bn_images),
    }
    if cached is None:
        return asked
    recorded = {key: cached.meta[key] for key in asked if key in cached.meta}
    for key, value in asked.items():
        if key in recorded and value != _SOURCE_DEFAULTS[key] and recorded[key] != value:
            shown = [_as_override(v) for v in (value, recorded[key])]
            raise UserError(
                f"eval.{key}={shown[0]} asks for other features than those in '{ev.features}' (extracted with "
                f"eval.{key}={shown[1]}); drop the setting, or extract those features into another folder"
            )
    return {**asked, **recorded}


def _as_override(value: Any) -> str:
    """A setting's value as it is written on the command line (``true``, not ``True``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _source_suffix(provenance: dict[str, Any]) -> str:
    """'' for the trained student's features, else what tells them apart: ``_raw_pixels``,
    ``_random_init`` or ``_teacher``, then ``_precise_bn`` for re-estimated batch-norm statistics."""
    if provenance.get("raw_pixels"):
        return "_raw_pixels"
    precise = "_precise_bn" if provenance.get("precise_bn_images") else ""
    if provenance.get("random_init"):
        return "_random_init" + precise
    encoder = provenance.get("encoder", "student")
    return ("" if encoder == "student" else f"_{encoder}") + precise


@TASKS.register("knn")
def knn_task(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.eval
    start = time.monotonic()
    model, source = _source_of(cfg)
    train, test = _labelled_splits(cfg, model)
    train_x, test_x = F.normalize(train.features, dim=1), F.normalize(test.features, dim=1)
    acc = knn_accuracy(train_x, train.labels, test_x, test.labels, list(ev.ks), ev.temperature)
    return {
        "task": "knn",
        "checkpoint": source,
        **_provenance(cfg, train if model is None else None),
        "num_train": int(train_x.shape[0]),
        "num_test": int(test_x.shape[0]),
        "feature_dim": int(train_x.shape[1]),
        "temperature": ev.temperature,
        "top1": acc["weighted"],
        "top1_majority": acc["majority"],
        "seconds": round(time.monotonic() - start, 1),
    }


# Tasks that store their result beside the cached features they read (``_result_path``).
_CACHED_RESULTS = ("knn", "linear", "lowshot")


def _make_room(out: Path, splits: list[str], overwrite: bool, rank: int) -> None:
    """Refuse to extract over an earlier extraction unless ``eval.overwrite=true``; then remove it
    (shards, index and the evaluations stored beside it, which described the old features), so no
    shard of a wider or finer earlier extraction is listed with the new one. Every rank looks
    before rank 0 removes anything."""
    taken = [out / split for split in splits if holds_features(out / split)]
    refusal = None
    if taken and not overwrite:
        refusal = (
            f"'{out}' already holds {_describe_extraction(taken[0])}; add eval.overwrite=true "
            "to replace them (and the evaluations stored beside them), or choose another eval.out_dir"
        )
    # One rank's refusal stops them all (each machine may be looking at a disk of its own).
    raise_on_every_rank(refusal)
    if rank == 0 and taken:
        for folder in taken:
            clear_features(folder)
        for task in _CACHED_RESULTS:
            (out / f"{task}.json").unlink(missing_ok=True)
    barrier()


def _describe_extraction(folder: Path) -> str:
    """What an earlier extraction in ``folder`` was, for the refusal."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return f"the shards of an unfinished or unreadable extraction in {folder.name}/"
    source = {key: index[key] for key in _SOURCE_DEFAULTS if key in index and index[key] != _SOURCE_DEFAULTS[key]}
    shown = ", ".join(f"eval.{key}={_as_override(v)}" for key, v in source.items())
    return f"{folder.name}/ features extracted from {index.get('checkpoint', 'an unknown checkpoint')}" + (
        f" ({shown})" if shown else ""
    )


@TASKS.register("extract")
def extract_task(cfg: DictConfig) -> dict[str, Any]:
    """Each rank (torchrun) extracts its strided share and writes its own shards."""
    ev = cfg.eval
    start = time.monotonic()
    model = _pretrained(cfg)
    env = init_distributed(model.device.type)
    provenance = _provenance(cfg)
    _recalibrate(cfg, model, env.rank, env.world_size)
    # One folder per kind of features, so extracting the random-init or teacher features of a run
    # never overwrites its trained student's.
    out = Path(ev.out_dir) if ev.out_dir else model.eval_dir / f"features{_source_suffix(provenance)}"
    _make_room(out, list(ev.splits), bool(ev.overwrite), env.rank)
    transform = eval_transform(model.size, model.mean, model.std)
    counts = {}
    for split in ev.splits:
        path = _split_path(cfg, split)
        source = build_source(cfg.data, path)
        batches = iter_features(
            model.trunk, cfg.data, path, transform, ev.batch_size, ev.num_workers, model.device, _layer(ev),
            env.rank, env.world_size,
        )  # fmt: skip
        meta = {
            "split": split, "checkpoint": str(model.checkpoint), "layer": ev.layer, "num_samples": len(source),
            **provenance,
        }  # fmt: skip
        key_of = source.key if hasattr(source, "key") else str
        write_shards(batches, key_of, out / split, env.rank, ev.shard_size, meta, env.world_size)
        counts[split] = len(source)
    return {
        "task": "extract",
        "checkpoint": str(model.checkpoint),
        **provenance,
        "features": str(out),
        "num_samples": counts,
        "world_size": env.world_size,
        "rank": env.rank,
        "seconds": round(time.monotonic() - start, 1),
    }


@TASKS.register("embed")
def embed_task(cfg: DictConfig) -> dict[str, Any]:
    """Every image of data.path (a folder, file list or tar shards) into eval.out_dir, resumable
    after a kill; under torchrun the ranks share the pieces (sslframe/curate/embed.py)."""
    from sslframe.curate.embed import embed_source

    ev = cfg.eval
    if not ev.out_dir:
        raise UserError("embedding needs eval.out_dir=DIR (the curation steps read the features there)")
    model = _pretrained(cfg)
    env = init_distributed(model.device.type)
    _recalibrate(cfg, model, env.rank, env.world_size)
    source = build_source(cfg.data, cfg.data.path)
    plan = {
        "source": cfg.data.source,
        "path": str(Path(cfg.data.path).resolve()) if "://" not in cfg.data.path else cfg.data.path,
        "checkpoint": str(model.checkpoint),
        "random_init": ev.random_init,
        "raw_pixels": ev.raw_pixels,
        "layer": ev.layer,
        "image_size": model.size,
    }
    # Recorded only when not the default, so an embedding started before these settings existed
    # still resumes under the same plan.
    if ev.encoder != "student":
        plan["encoder"] = ev.encoder
    if ev.precise_bn_images > 0:
        plan["precise_bn_images"] = int(ev.precise_bn_images)
    counts = embed_source(
        model.trunk, source, Path(ev.out_dir), eval_transform(model.size, model.mean, model.std),
        plan=plan, piece_size=ev.piece_size, batch_size=ev.batch_size, num_workers=ev.num_workers,
        device=model.device, layer=_layer(ev), rank=env.rank, world_size=env.world_size,
    )  # fmt: skip
    return {
        "task": "embed",
        "checkpoint": str(model.checkpoint),
        "features": str(Path(ev.out_dir).resolve()),
        "num_samples": len(source),
        "world_size": env.world_size,
        "rank": env.rank,
        **counts,
    }


def _probe_settings(ev: DictConfig) -> ProbeSettings:
    return ProbeSettings(
        epochs=ev.epochs,
        batch_size=ev.probe_batch_size,
        lr=ev.lr,
        momentum=ev.momentum,
        weight_decay=ev.weight_decay,
        optimizer=ev.optimizer,
        batch_norm=ev.batch_norm,
        seed=ev.seed,
    )


def train_transform(size: int, scale: Iterable[float], mean: list[float], std: list[float]) -> v2.Compose:
    """Light augmentation of the linear and fine-tuning protocols: random resized crop and flip."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=tuple(scale), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def _map_style(data_cfg: DictConfig, path: str) -> Any:
    """A source read by index (image folder, file list): what augmented passes need."""
    source = build_source(data_cfg, path)
    if not hasattr(source, "read"):
        raise UserError("augmented linear probing and fine-tuning need an image folder or file list, not tar shards")
    return source


def _image_batches(cfg: DictConfig, model: Pretrained, seed: int) -> tuple[EpochBatches, int]:
    """Augmented training images, shuffled per epoch; (epoch -> batches, steps per epoch)."""
    ev = cfg.eval
    source = _map_style(cfg.data, cfg.data.path)
    transform = train_transform(model.size, ev.crop_scale, model.mean, model.std)
    sampler = EpochSampler(len(source), seed, shuffle=True)
    loader = make_loader(ViewsDataset(source, transform, seed=seed), sampler, ev.batch_size, ev.num_workers, False)

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        sampler.set_epoch(epoch)
        for batch in loader:
            if batch.size:
                yield batch.views[0].contiguous(memory_format=torch.channels_last), batch.labels

    return batches, -(-len(source) // ev.batch_size)


@TASKS.register("linear")
def linear_task(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.eval
    start = time.monotonic()
    settings = _probe_settings(ev)
    if ev.augment and ev.features:
        raise UserError("eval.augment=true recomputes features from images; drop eval.features")
    model, source = _source_of(cfg)
    train, val = _labelled_splits(cfg, model)
    if ev.augment:
        assert model is not None
        images, steps = _image_batches(cfg, model, ev.seed)
        trunk = model.trunk.to(model.device).eval()

        def frozen(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in images(epoch):
                # Outside the no_grad block at the yield: the probe's own step needs gradients.
                with torch.no_grad():
                    feats = trunk_features(trunk, x.to(model.device), _layer(ev)).cpu()
                yield feats, y

        num_classes = int(max(train.labels.max(), val.labels.max())) + 1
        probe = train_linear(frozen, steps, train.features.shape[1], num_classes, settings)
        acc = evaluate(probe, val.features, val.labels)
    else:
        acc = linear_probe(train.features, train.labels, val.features, val.labels, settings)
    return {
        "task": "linear",
        "checkpoint": source,
        **_provenance(cfg, train if model is None else None),
        "num_train": len(train.labels),
        "num_val": len(val.labels),
        "feature_dim": int(train.features.shape[1]),
        "settings": settings.__dict__,
        "augment": ev.augment,
        "top1": acc["top1"],
        "top5": acc["top5"],
        "seconds": round(time.monotonic() - start, 1),
    }


@TASKS.register("lowshot")
def lowshot_task(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.eval
    start = time.monotonic()
    model, source = _source_of(cfg)
    train, val = _labelled_splits(cfg, model)
    settings = _probe_settings(ev)

    def probe(subset: torch.Tensor, seed: int) -> float:
        x, y = train.features[subset], train.labels[subset]
        if ev.probe == "knn":
            tx, vx = F.normalize(x, dim=1), F.normalize(val.features, dim=1)
            return knn_accuracy(tx, y, vx, val.labels, [ev.k], ev.temperature)["weighted"][str(ev.k)]
        seeded = ProbeSettings(**{**settings.__dict__, "seed": seed})
        return linear_probe(x, y, val.features, val.labels, seeded)["top1"]

    sizes = subset_sizes(train.labels, ev.fractions, ev.per_class)
    results = lowshot(train.labels, sizes, list(ev.seeds), probe)
    return {
        "task": "lowshot",
        "checkpoint": source,
        **_provenance(cfg, train if model is None else None),
        "probe": ev.probe,
        "num_train": len(train.labels),
        "num_val": len(val.labels),
        "seeds": list(ev.seeds),
        "subsets": results,
        "top1": {name: r["top1_mean"] for name, r in results.items()},
        "seconds": round(time.monotonic() - start, 1),
    }


@torch.no_grad()
def _classify(model: Classifier, cfg: DictConfig, pre: Pretrained) -> dict[str, float]:
    transform = eval_transform(pre.size, pre.mean, pre.std)
    logits, labels = [], []
    source = _map_style(cfg.data, _split_path(cfg, "val"))
    loader = make_loader(
        ViewsDataset(source, transform, seed=0),
        EpochSampler(len(source), 0, shuffle=False),
        cfg.eval.batch_size,
        cfg.eval.num_workers,
        drop_last=False,
    )
    for batch in loader:
        if batch.size:
            logits.append(model(batch.views[0].to(pre.device)).float().cpu())
            labels.append(batch.labels)
    return topk_accuracy(torch.cat(logits), torch.cat(labels))


@TASKS.register("finetune")
def finetune_task(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.eval
    start = time.monotonic()
    if ev.precise_bn_images > 0:
        raise UserError("fine-tuning trains the batch-norm statistics with the trunk; drop eval.precise_bn_images")
    pre = _pretrained(cfg)
    source = _map_style(cfg.data, cfg.data.path)
    labels = [s.label for s in getattr(source, "samples", [])]
    if not labels or min(labels) < 0:
        raise UserError("fine-tuning needs labelled images (class sub-folders) in data.path")
    torch.manual_seed(ev.seed)
    model = Classifier(pre.trunk.train(), max(labels) + 1).to(pre.device)
    optimizer = build_finetune_optimizer(model, ev.optimizer, ev.lr, ev.weight_decay, ev.layer_decay, ev.momentum)
    batches, steps = _image_batches(cfg, pre, ev.seed)
    train_finetune(model, batches, steps, ev.epochs, optimizer, ev.warmup_epochs, pre.device)
    acc = _classify(model, cfg, pre)
    return {
        "task": "finetune",
        "checkpoint": str(pre.checkpoint),
        "random_init": ev.random_init,
        "encoder": ev.encoder,
        "epochs": ev.epochs,
        "optimizer": ev.optimizer,
        "lr": ev.lr,
        "layer_decay": ev.layer_decay,
        "top1": acc["top1"],
        "top5": acc["top5"],
        "seconds": round(time.monotonic() - start, 1),
    }


def _result_path(cfg: DictConfig, result: dict[str, Any]) -> Path:
    if cfg.out:
        return Path(cfg.out)
    if cfg.eval.name == "embed":
        return Path(cfg.eval.out_dir) / "embed.json"
    if cfg.eval.get("features"):
        return Path(cfg.eval.features) / f"{cfg.eval.name}.json"
    source = Path(result["checkpoint"])
    eval_dir = source.parent / "eval" / source.stem if source.is_file() else source.parent.parent / "eval"
    return eval_dir / f"{cfg.eval.name}{_source_suffix(result)}.json"


def summary_line(result: dict[str, Any]) -> str:
    """One line for the console: the task and its headline numbers."""
    keys = ("task", "top1", "top5", "features", "num_samples", "embedded", "skipped")
    return json.dumps({k: result[k] for k in keys if k in result})


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    result = TASKS.get(cfg.eval.name)(cfg)
    if cfg.eval.get("raw_pixels"):
        result.setdefault("raw_pixels", True)
    path = _result_path(cfg, result)
    if result.get("rank", 0) == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return {"result": result, "summary": summary_line(result), "path": str(path)}
