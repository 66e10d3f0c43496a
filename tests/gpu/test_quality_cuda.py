"""The quality benchmark on a CUDA device (``bench/quality.py --device cuda``): both sides pretrain
there, features are computed there and evaluated on the CPU. Smoke mode, a ResNet method with a
stateful loss (DINO's centre) and the ViT ones whose lightly side trains a timm copy (MAE, iBOT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightly", reason="lightly is a benchmark dependency (make bench-deps; make test installs it)")

from bench import quality
from tests.bench.test_quality import fake_fashion_mnist

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_quick_rows_on_cuda(tmp_path: Path) -> None:
    idx = fake_fashion_mnist(tmp_path / "idx")
    out = tmp_path / "quality.json"
    args = ["--quick", "--device", "cuda", "--methods", "dino,mae,ibot", "--idx-dir", str(idx), "--out", str(out)]
    assert quality.main([*args, "--work-dir", str(tmp_path)]) == 0
    rows = {(r["method"], r["side"]): r for r in json.loads(out.read_text())["rows"]}
    for method in ("dino", "mae", "ibot"):
        for side in ("ours", "lightly"):
            row = rows[(method, side)]
            assert row["steps"] == 2 and row["config"]["trainer"]["device"] == "cuda", (method, side)
            assert 0.0 <= row["knn20"] <= 1.0 and row["curve"], (method, side)
