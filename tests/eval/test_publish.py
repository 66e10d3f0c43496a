"""Sharing a trained trunk: the hf folder loads into timm and computes the trunk's features, its
model card carries the run's method, data, evaluations and config; ONNX runs in onnxruntime at
any batch size; a trunk timm has no model for is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from sslframe.errors import UserError
from sslframe.eval.features import load_trunk
from sslframe.eval.publish import export_run
from tests.helpers import make_image_folder


def trained(tmp_path: Path, *trunk: str) -> Path:
    data = make_image_folder(tmp_path / "images", size=32)
    run = tmp_path / "run"
    args = ["config=quickstart_simclr", "data=folder", f"data.path={data}", f"run.dir={run}", "data.batch_size=8"]
    args += ["data.num_workers=0", "transform.global_size=32", "head.hidden_dims=[32]", "head.output_dim=16"]
    Trainer(compose_config("train", [*args, *trunk, "trainer.max_steps=2", "trainer.progress=false"])).fit()
    return run


def test_hf_folder_loads_into_timm_with_a_model_card(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    run = trained(tmp_path, "trunk.arch=resnet18", "trunk.width_multiplier=1.0", "trunk.small_images=false")
    (run / "eval").mkdir()
    (run / "eval" / "knn.json").write_text(json.dumps({"task": "knn", "top1": {"20": 0.75, "200": 0.7}}))
    out = tmp_path / "hf"
    written = export_run(run, "hf", out, "mit")
    assert {p.name for p in written} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((out / "config.json").read_text())
    model = timm.create_model(
        config["architecture"], pretrained=True, pretrained_cfg_overlay={"file": str(out / "model.safetensors")},
        num_classes=0, **config["model_args"],
    ).eval()  # fmt: skip
    trunk, _, _ = load_trunk(run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trunk(x), rtol=1e-4, atol=1e-5)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\nlibrary_name: timm")
    assert "simclr" in card and "| knn | top1 (k=20) | 0.7500 |" in card and "max_steps: 2" in card


def test_onnx_runs_at_any_batch_size(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    run = trained(tmp_path, "trunk.arch=resnet18", "trunk.width_multiplier=0.25", "trunk.small_images=true")
    (path,) = export_run(run, "onnx", tmp_path / "onnx")
    trunk, _, _ = load_trunk(run)
    x = torch.randn(5, 3, 32, 32)
    (features,) = onnxruntime.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(features), trunk(x), rtol=1e-4, atol=1e-5)


def test_a_trunk_timm_has_no_model_for_is_refused(tmp_path: Path) -> None:
    run = trained(tmp_path, "trunk.arch=resnet18", "trunk.width_multiplier=0.25", "trunk.small_images=true")
    with pytest.raises(UserError, match="timm has no model for this ResNet"):
        export_run(run, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()
