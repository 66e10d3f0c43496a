"""The Python API: docs/python_api.md's example runs as written (on generated images), and
bad input raises the same one-line errors as the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sslframe
from sslframe.errors import UserError
from tests.helpers import ROOT, make_image_folder


def example() -> str:
    text = (ROOT / "docs" / "python_api.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return code


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    folder = make_image_folder(tmp_path / "images", classes=2, per_class=16, size=28)
    code = example().replace('"data/fashion_mnist/train"', repr(str(folder)))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python_api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "simclr resnet18" in out and "torch.Size([4, 128])" in out
    assert (tmp_path / "runs" / "api_try" / "checkpoints").is_dir()


def test_api_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown key 'optim\.lrr'"):
        sslframe.compose("fmnist_simclr", ["optim.lrr=0.3"])
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(UserError, match="say its layout= and arch="):
        sslframe.load_trunk(weights)


def test_load_trunk_of_a_weights_file_matches_the_exported_trunk(tmp_path: Path) -> None:
    from sslframe.eval.interchange import export_trunk, save_state_file, trunk_for_arch

    torch.manual_seed(0)
    trunk = trunk_for_arch("resnet18")
    path = save_state_file(export_trunk(trunk, "timm"), tmp_path / "r18.safetensors")
    loaded = sslframe.load_trunk(path, layout="timm", arch="resnet18")
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trunk.eval()(x))
