"""Monitors that read the model during pretraining and never change it (docs/architecture.md, principle 7).

``OnlineKNN``: every N steps, weighted kNN top-1 of a fixed labelled held-out subset against a
fixed labelled subset of the training data, with the trunk in eval mode under ``no_grad`` and
the RNG streams forked, so a run is bit-identical with and without it.

``CollapseMonitor``: per step, on the method's normalised embeddings, the mean per-dimension
standard deviation (0 when every sample maps to one point; about 1/sqrt(d) for embeddings spread
over the sphere, Chen & He 2021 SimSiam, section 4.1) and the effective rank (Roy & Vetterli
2007: exp of the entropy of the normalised singular values; 1 for a collapsed batch, d at most).
The step only launches device work (the std and a small Gram matrix, no host synchronisation);
the eigenvalues behind the effective rank are computed when the logging interval is read.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslframe.data.sources import build_source
from sslframe.data.transforms import decode, eval_transform
from sslframe.errors import UserError
from sslframe.eval.knn import knn_accuracy

log = logging.getLogger(__name__)


def first_per_class(source: Any, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of every class, in dataset order (a fixed subset)."""
    if not hasattr(source, "samples"):
        raise UserError("the online kNN monitor needs an image folder or file list in data.path and data.val_path")
    labels = [s.label for s in source.samples]
    if any(label < 0 for label in labels):
        raise UserError("the online kNN monitor needs labelled images (class sub-folders) in data.path and val_path")
    taken: dict[int, int] = {}
    chosen = []
    for i, label in enumerate(labels):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(i)
    return chosen


def load_images(data_cfg: Any, path: str, per_class: int, size: int, mean: Any, std: Any) -> tuple[torch.Tensor, ...]:
    """Decoded, centre-cropped, normalised images of the fixed subset and their labels."""
    source = build_source(data_cfg, path)
    transform = eval_transform(size, mean, std)
    images, labels = [], []
    for i in first_per_class(source, per_class):
        _, data, label = source.read(i)
        images.append(transform(decode(data)))
        labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def gram(z: torch.Tensor) -> torch.Tensor:
    """z^T z or z z^T, whichever is smaller: its eigenvalues are the squared singular values of z."""
    z = z.float()
    return z.T @ z if z.shape[1] <= z.shape[0] else z @ z.T


def effective_rank_of_gram(g: torch.Tensor) -> torch.Tensor:
    """exp(H(p)), p the singular values divided by their sum (Roy & Vetterli 2007, eq. 3-4);
    NaN for non-finite embeddings (a diverged step must not stop training from the monitor)."""
    if not bool(torch.isfinite(g).all()):
        return torch.tensor(float("nan"), dtype=torch.float64)
    s = torch.linalg.eigvalsh(g.double()).clamp_min(0).sqrt()
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())


def effective_rank(z: torch.Tensor) -> torch.Tensor:
    return effective_rank_of_gram(gram(z))


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings."""
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


class CollapseMonitor:
    def __init__(self, min_std: float, min_effective_rank: float) -> None:
        self.min_std = min_std
        self.min_effective_rank = min_effective_rank
        self.std_sum: torch.Tensor | None = None
        self.grams: list[torch.Tensor] = []

    def on_step(self, step: int, out: Any) -> None:
        emb = getattr(out, "embeddings", None)
        if emb is None or emb.shape[0] < 2:
            return
        z = F.normalize(emb.detach().float(), dim=1)
        std = z.std(dim=0).mean()
        self.std_sum = std if self.std_sum is None else self.std_sum + std
        self.grams.append(gram(z))

    def read(self) -> dict[str, float]:
        if self.std_sum is None:
            return {}
        std = float(self.std_sum) / len(self.grams)
        rank = sum(float(effective_rank_of_gram(g)) for g in self.grams) / len(self.grams)
        self.std_sum, self.grams = None, []
        if std < self.min_std or rank < self.min_effective_rank:
            log.warning(
                "embeddings may be collapsing: std %.4g (warn below %.4g), effective rank %.3g (warn below %.3g)",
                std,
                self.min_std,
                rank,
                self.min_effective_rank,
            )
        return {"embedding_std": std, "effective_rank": rank}


class OnlineKNN:
    def __init__(self, trunk: nn.Module, cfg: Any, device: torch.device, memory_format: torch.memory_format) -> None:
        mon = cfg.monitor
        if not cfg.data.val_path:
            raise UserError("monitor.knn_every > 0 needs a labelled held-out split: set data.val_path=DIR")
        tf = cfg.transform
        args = (tf.global_size, tf.mean, tf.std)
        self.memory = load_images(cfg.data, cfg.data.path, mon.knn_train_per_class, *args)
        self.queries = load_images(cfg.data, cfg.data.val_path, mon.knn_val_per_class, *args)
        self.trunk = trunk
        self.every = mon.knn_every
        self.k = mon.knn_k
        self.temperature = mon.knn_temperature
        self.batch_size = mon.knn_batch_size
        self.device = device
        self.memory_format = memory_format
        self.pending: dict[str, float] = {}

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device, memory_format=self.memory_format)
            parts.append(F.normalize(self.trunk(batch).float(), dim=1))
        return torch.cat(parts)

    def evaluate(self) -> float:
        """kNN top-1 now; the trunk's train/eval flags and every RNG stream are restored after."""
        modes = {m: m.training for m in self.trunk.modules()}
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                self.trunk.eval()
                memory, queries = self._features(self.memory[0]), self._features(self.queries[0])
        finally:
            for module, training in modes.items():
                module.training = training
        acc = knn_accuracy(memory.cpu(), self.memory[1], queries.cpu(), self.queries[1], [self.k], self.temperature)
        return acc["weighted"][str(self.k)]

    def on_step(self, step: int, out: Any) -> None:
        if step % self.every == 0:
            self.pending = {"knn_top1": self.evaluate()}

    def read(self) -> dict[str, float]:
        pending, self.pending = self.pending, {}
        return pending


def build_monitors(cfg: Any, trunk: nn.Module, device: torch.device, memory_format: torch.memory_format) -> list[Any]:
    """The monitors ``cfg.monitor`` asks for; every rank runs them (a sharded trunk needs all ranks)."""
    mon = cfg.get("monitor")
    if mon is None:
        return []
    monitors: list[Any] = []
    if mon.collapse:
        monitors.append(CollapseMonitor(mon.min_std, mon.min_effective_rank))
    if mon.knn_every > 0:
        monitors.append(OnlineKNN(trunk, cfg, device, memory_format))
    return monitors
