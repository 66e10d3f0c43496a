"""Pictures of a run: training curves from ``metrics.jsonl`` and a 2-D map of test embeddings.

The map uses UMAP when ``umap-learn`` is installed, else t-SNE from scikit-learn, else PCA
(``torch.pca_lowrank``), so it never needs a heavy dependency.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from sslframe.data.sources import build_source
from sslframe.data.transforms import eval_transform
from sslframe.distributed import checkpoint as ckpt
from sslframe.errors import UserError
from sslframe.eval.features import iter_features, load_trunk

log = logging.getLogger(__name__)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"'{run_dir}' has no metrics.jsonl; is it a training run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """loss_lr.png (loss and learning rate against steps), and knn.png / collapse.png when logged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig = Figure(figsize=(7, 6))
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True)
    ax_loss.plot(*_curve(records, "loss"), color="tab:blue")
    ax_loss.set_ylabel("loss")
    ax_lr.plot(*_curve(records, "lr"), color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "loss_lr.png"))
    if _curve(records, "knn_top1")[0]:
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        ax.plot(*_curve(records, "knn_top1"), marker="o", color="tab:green")
        ax.set_xlabel("step")
        ax.set_ylabel("online kNN top-1")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "knn.png"))
    if _curve(records, "effective_rank")[0]:
        fig = Figure(figsize=(7, 5))
        ax_std, ax_rank = fig.subplots(2, 1, sharex=True)
        ax_std.plot(*_curve(records, "embedding_std"))
        ax_std.set_ylabel("embedding std")
        ax_rank.plot(*_curve(records, "effective_rank"))
        ax_rank.set_ylabel("effective rank")
        ax_rank.set_xlabel("step")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "collapse.png"))
    return written


def _save(fig: Figure, path: Path) -> Path:
    """Figures are built without pyplot: no GUI backend, no global figure registry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def project_2d(features: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Two coordinates per row and the method used (umap, tsne or pca)."""
    x = features.float().numpy()
    try:
        import umap

        return torch.from_numpy(umap.UMAP(random_state=seed).fit_transform(x)), "umap"
    except ImportError:
        pass
    try:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))
        return torch.from_numpy(TSNE(perplexity=perplexity, random_state=seed).fit_transform(x)), "tsne"
    except ImportError:
        _, _, v = torch.pca_lowrank(features.float(), q=2, center=True)
        return (features.float() - features.float().mean(0)) @ v[:, :2], "pca"


def plot_embeddings(
    run_dir: Path, out_dir: Path, max_points: int = 2000, batch_size: int = 256, encoder: str = "student"
) -> Path:
    """embeddings.png: test-split (else training) features of the newest checkpoint, coloured by
    class; ``encoder="teacher"``: of the trunk's momentum copy, as embeddings_teacher.png."""
    trunk, run_cfg, _ = load_trunk(run_dir, encoder=encoder)
    data = run_cfg.data
    path = data.val_path or data.path
    source = build_source(data, path)
    tf = run_cfg.transform
    # Every stride-th image of a class-sorted folder: an even sample of every class.
    stride = max(1, math.ceil(len(source) / max_points))
    transform = eval_transform(tf.global_size, tf.mean, tf.std)
    cpu = torch.device("cpu")
    parts = list(iter_features(trunk, data, path, transform, batch_size, 0, cpu, rank=0, world_size=stride))
    features = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    xy, method = project_2d(torch.nn.functional.normalize(features, dim=1))
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    names = getattr(source, "classes", [])
    for c in labels.unique().tolist():
        mask = labels == c
        label = names[c] if 0 <= c < len(names) else str(c)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=4, alpha=0.7, label=label)
    if len(names) and len(names) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best")
    whose = "trunk" if encoder == "student" else f"{encoder} trunk"
    ax.set_title(f"{len(labels)} images of {Path(path).name}, {method.upper()} of {whose} features")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, out_dir / ("embeddings.png" if encoder == "student" else f"embeddings_{encoder}.png"))


def plot_run(run_dir: Path, max_points: int = 2000, encoder: str = "student") -> list[Path]:
    """Every picture of a run, under ``run_dir/plots`` (the embedding map of ``encoder``)."""
    out_dir = run_dir / "plots"
    written = plot_training(read_metrics(run_dir), out_dir)
    if ckpt.latest_checkpoint(run_dir / "checkpoints") is None:
        log.warning("%s has no complete checkpoint yet: no embedding map", run_dir)
    else:
        written.append(plot_embeddings(run_dir, out_dir, max_points, encoder=encoder))
    return written
