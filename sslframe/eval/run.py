"""Evaluation tasks behind ``tools/eval.py``; results go to JSON next to the checkpoint's run."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslframe.engine.trainer import pick_device
from sslframe.errors import UserError
from sslframe.eval.features import extract_features, load_trunk
from sslframe.eval.knn import knn_accuracy
from sslframe.registry import Registry

log = logging.getLogger(__name__)

TASKS: Registry[Callable[[DictConfig], dict[str, Any]]] = Registry("evaluation")


@TASKS.register("knn")
def knn_task(cfg: DictConfig) -> dict[str, Any]:
    ev = cfg.eval
    if not cfg.data.val_path:
        raise UserError("kNN needs a held-out split: set data.val_path=DIR (data.path is the memory bank)")
    trunk, run_cfg, folder = load_trunk(cfg.checkpoint, random_init=ev.random_init)
    device = pick_device(ev.device)
    tf = run_cfg.transform
    size = ev.image_size or tf.global_size
    args = (size, tf.mean, tf.std, ev.batch_size, ev.num_workers, device)
    start = time.monotonic()
    train_x, train_y = extract_features(trunk, cfg.data, cfg.data.path, *args)
    test_x, test_y = extract_features(trunk, cfg.data, cfg.data.val_path, *args)
    if (train_y < 0).any() or (test_y < 0).any():
        raise UserError("kNN needs labelled images (class sub-folders) in data.path and data.val_path")
    acc = knn_accuracy(train_x, train_y, test_x, test_y, list(ev.ks), ev.temperature)
    return {
        "task": "knn",
        "checkpoint": str(folder),
        "random_init": ev.random_init,
        "num_train": int(train_x.shape[0]),
        "num_test": int(test_x.shape[0]),
        "feature_dim": int(train_x.shape[1]),
        "temperature": ev.temperature,
        "top1": acc["weighted"],
        "top1_majority": acc["majority"],
        "seconds": round(time.monotonic() - start, 1),
    }


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    result = TASKS.get(cfg.eval.name)(cfg)
    if cfg.out:
        path = Path(cfg.out)
    else:
        run_dir = Path(result["checkpoint"]).parent.parent
        suffix = "_random_init" if result.get("random_init") else ""
        path = run_dir / "eval" / f"{cfg.eval.name}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    summary = {k: result[k] for k in ("task", "top1") if k in result}
    return {"result": result, "summary": summary, "path": str(path)}
