"""Collapse statistics on known inputs; the online kNN monitor leaves training bit-identical."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from sslframe.engine.monitors import CollapseMonitor, effective_rank, embedding_std
from sslframe.methods.base import StepOutput
from tests.helpers import TINY, make_image_folder


def test_collapse_statistics_on_known_embeddings() -> None:
    d = 16
    # Orthonormal rows: every singular value is 1, so p is uniform and exp(H) = d (Roy & Vetterli).
    assert effective_rank(torch.eye(d)).item() == pytest.approx(d, rel=1e-5)
    collapsed = torch.ones(64, d)
    assert effective_rank(collapsed).item() == pytest.approx(1.0, rel=1e-4)
    assert embedding_std(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    # Isotropic Gaussian directions: each coordinate of a unit vector has variance 1/d.
    spread = torch.randn(8192, d, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread).item() == pytest.approx(d**-0.5, rel=0.03)
    # Through the Gram matrix (either orientation) it equals the definition on singular values.
    for shape in ((40, 12), (6, 12)):
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        s = torch.linalg.svdvals(z.double())
        p = s / s.sum()
        assert effective_rank(z).item() == pytest.approx(torch.exp(-(p * p.log()).sum()).item(), rel=1e-5)


def test_nonfinite_embeddings_give_nan_not_an_error() -> None:
    # A diverged step (trainer.on_nan=skip) must not be turned into a crash by an observer.
    z = torch.eye(8)
    z[0, 0] = float("nan")
    assert torch.isnan(effective_rank(z))


def test_collapse_monitor_averages_and_warns(caplog) -> None:
    monitor = CollapseMonitor(min_std=0.01, min_effective_rank=2.0)
    monitor.on_step(1, StepOutput(loss=torch.zeros(()), embeddings=torch.eye(8)))
    monitor.on_step(2, StepOutput(loss=torch.zeros(()), embeddings=torch.eye(8)))
    with caplog.at_level(logging.WARNING):
        healthy = monitor.read()
    assert healthy["effective_rank"] == pytest.approx(8.0, rel=1e-5) and not caplog.records
    assert monitor.read() == {}  # reset after each read
    monitor.on_step(3, StepOutput(loss=torch.zeros(()), embeddings=torch.ones(8, 4)))
    with caplog.at_level(logging.WARNING):
        collapsed = monitor.read()
    assert collapsed["embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert "collapsing" in caplog.text


def _fit(root: Path, name: str, knn_every: int, *extra: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
    from sslframe.config import compose_config
    from sslframe.engine.trainer import Trainer

    cfg = compose_config(
        "train",
        [
            "config=quickstart",
            *TINY,
            "data=folder",
            f"data.path={root / 'train'}",
            f"data.val_path={root / 'val'}",
            f"run.dir={root / name}",
            "trainer.max_steps=3",
            "trainer.checkpoint_every=100",
            f"monitor.knn_every={knn_every}",
            "monitor.knn_train_per_class=4",
            "monitor.knn_val_per_class=2",
            "monitor.knn_k=3",
            *extra,
        ],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    records = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    return {k: v.clone() for k, v in trainer.method.state_dict().items()}, records


def test_online_knn_does_not_change_training(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", classes=2, per_class=12)
    make_image_folder(tmp_path / "val", classes=2, per_class=4, seed=1)
    plain_state, plain_log = _fit(tmp_path, "plain", knn_every=0)
    watched_state, watched_log = _fit(tmp_path, "watched", knn_every=1)
    for key, value in plain_state.items():
        assert torch.equal(value, watched_state[key]), key
    assert [r["loss"] for r in plain_log] == [r["loss"] for r in watched_log]
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in watched_log) and len(watched_log) == 3
    assert all("knn_top1" not in r for r in plain_log)
    assert all(r["effective_rank"] >= 1.0 and r["embedding_std"] > 0 for r in watched_log)


def test_online_linear_probe_learns_the_labels_and_does_not_change_training(tmp_path: Path) -> None:
    """Trained every step on the detached trunk features of the batch's first view with the
    batch's labels (classes of the generated images differ in intensity, so a linear probe
    separates them), by an optimizer of its own: the run is bit-identical without it."""
    make_image_folder(tmp_path / "train", classes=2, per_class=12)
    make_image_folder(tmp_path / "val", classes=2, per_class=4, seed=1)
    plain_state, plain_log = _fit(tmp_path, "plain", 0, "trainer.max_steps=8")
    probed_state, probed_log = _fit(tmp_path, "probed", 0, "trainer.max_steps=8", "monitor.linear_every=4")
    for key, value in plain_state.items():
        assert torch.equal(value, probed_state[key]), key
    assert [r["loss"] for r in plain_log] == [r["loss"] for r in probed_log]
    assert all("linear_probe_train_top1" in r for r in probed_log)
    evaluated = [r["linear_probe_top1"] for r in probed_log if "linear_probe_top1" in r]
    assert [r["step"] for r in probed_log if "linear_probe_top1" in r] == [4, 8]
    assert evaluated[-1] >= 0.75, evaluated  # chance is 0.5
