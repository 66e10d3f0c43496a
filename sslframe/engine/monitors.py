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

    def on_step(self, step: int, out: Any, batch: Any = None) -> None:
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

    def evaluate(self) -> float:
        """kNN top-1 now; the trunk's train/eval flags and every RNG stream are restored after."""
        args = (self.batch_size, self.device, self.memory_format)
        memory = F.normalize(_eval_features(self.trunk, self.memory[0], *args), dim=1)
        queries = F.normalize(_eval_features(self.trunk, self.queries[0], *args), dim=1)
        acc = knn_accuracy(memory.cpu(), self.memory[1], queries.cpu(), self.queries[1], [self.k], self.temperature)
        return acc["weighted"][str(self.k)]

    def on_step(self, step: int, out: Any, batch: Any = None) -> None:
        if step % self.every == 0:
            self.pending = {"knn_top1": self.evaluate()}

    def read(self) -> dict[str, float]:
        pending, self.pending = self.pending, {}
        return pending


def _eval_features(
    trunk: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, memory_format: torch.memory_format
) -> torch.Tensor:
    """Pooled trunk features of ``images`` in eval mode, without gradients; the trunk's train/eval
    flags and every RNG stream are restored after (monitors never change training)."""
    modes = {m: m.training for m in trunk.modules()}
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            trunk.eval()
            parts = [
                trunk(images[start : start + batch_size].to(device, memory_format=memory_format)).float()
                for start in range(0, len(images), batch_size)
            ]
    finally:
        for module, training in modes.items():
            module.training = training
    return torch.cat(parts)


class OnlineLinearProbe:
    """A linear classifier on the detached trunk features of each training step's first view,
    trained with the batch's labels by an SGD of its own, so the trunk never sees its gradient
    (solo-learn's online classifier): its running top-1 on the training batches, and every
    ``linear_every`` steps its top-1 on the held-out images of the online kNN monitor. The
    features come from a forward hook on the trunk (the first call of each training step); the
    classifier is built with the RNG forked, so a run is bit-identical with and without it."""

    def __init__(self, trunk: nn.Module, cfg: Any, device: torch.device, memory_format: torch.memory_format) -> None:
        mon = cfg.monitor
        if not cfg.data.val_path:
            raise UserError("monitor.linear_every > 0 needs a labelled held-out split: set data.val_path=DIR")
        tf = cfg.transform
        self.queries = load_images(cfg.data, cfg.data.val_path, mon.knn_val_per_class, tf.global_size, tf.mean, tf.std)
        classes = int(self.queries[1].max()) + 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            self.classifier = nn.Linear(trunk.out_dim, classes).to(device)
        self.optimizer = torch.optim.SGD(self.classifier.parameters(), lr=mon.linear_lr, momentum=0.9)
        self.trunk, self.device, self.memory_format = trunk, device, memory_format
        self.every, self.batch_size = mon.linear_every, mon.knn_batch_size
        self.features: torch.Tensor | None = None
        trunk.register_forward_hook(self._capture)
        self.correct = torch.zeros((), device=device)
        self.seen = torch.zeros((), device=device)
        self.pending: dict[str, float] = {}

    def _capture(self, module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled() and self.features is None:
            self.features = output.detach().float()

    def on_step(self, step: int, out: Any, batch: Any = None) -> None:
        features, self.features = self.features, None
        if features is None or batch is None or batch.labels is None or (batch.labels < 0).any():
            return
        labels = batch.labels.to(self.device, non_blocking=True)
        x = features[: labels.shape[0]]
        with torch.enable_grad():
            logits = self.classifier(x)
            loss = nn.functional.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += labels.shape[0]
        if step % self.every == 0:
            feats = _eval_features(self.trunk, self.queries[0], self.batch_size, self.device, self.memory_format)
            with torch.no_grad():
                predicted = self.classifier(feats).argmax(1).cpu()
            self.pending = {"linear_probe_top1": float((predicted == self.queries[1]).float().mean())}

    def read(self) -> dict[str, float]:
        record = {**self.pending, "linear_probe_train_top1": float(self.correct / self.seen.clamp(min=1))}
        self.pending = {}
        self.correct.zero_()
        self.seen.zero_()
        return record


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
    if mon.get("linear_every", 0) > 0:
        monitors.append(OnlineLinearProbe(trunk, cfg, device, memory_format))
    return monitors
