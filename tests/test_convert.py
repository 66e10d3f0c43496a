"""tools/convert.py consolidate: a plain trunk state dict that loads into torchvision."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file

from sslframe.config import compose_config
from sslframe.engine.trainer import train
from tests.helpers import TINY, run_tool


def test_consolidated_trunk_loads_into_torchvision(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [
        "config=quickstart",
        *TINY,
        "trunk.width_multiplier=1.0",
        "data=folder",
        f"data.path={image_folder}",
        f"run.dir={run}",
        "trainer.max_steps=1",
    ]
    train(compose_config("train", overrides))
    out = tmp_path / "trunk.pt"
    result = run_tool("convert.py", "consolidate", str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    weights = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the small-image stem of the run
    model.maxpool = torch.nn.Identity()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert unexpected == [] and set(missing) == {"fc.weight", "fc.bias"}
    st = tmp_path / "all.safetensors"
    assert (
        run_tool("convert.py", "consolidate", str(run), "--out", str(st), "--with-heads", "--safetensors").returncode
        == 0
    )
    everything = load_file(str(st))
    assert any(k.startswith("head.") for k in everything) and any(k.startswith("prototypes.") for k in everything)


def test_consolidate_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    result = run_tool("convert.py", "consolidate", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
