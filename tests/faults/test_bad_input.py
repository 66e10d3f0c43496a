"""Bad input gives one clear line and a non-zero exit, no traceback, and loses nothing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.faults.common import run, train_cmd


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line_error(code: int, out: str, needle: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], out


@pytest.fixture
def trained(trained_three_steps: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_three_steps, run_dir)
    return run_dir


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["optim.lr=fast"], "optim.lr"),
        (["trainer.precision=fp8"], "valid choices: auto, fp32, bf16, fp16"),
        (["trunk.arch=resnet19"], "trunk.arch"),
        (["trunk._target_=os.system"], "unknown key 'trunk._target_'"),
        (["trainer.resume=/nonexistent/ckpt"], "is not a checkpoint"),
        (["trunk.width_multiplier=0.25"], "different model config"),
    ],
)
def test_bad_input_changes_nothing_in_the_run_dir(
    fault_data: Path, trained: Path, extra: list[str], needle: str
) -> None:
    before = snapshot(trained)
    code, out = run(train_cmd(fault_data, trained, "trainer.max_steps=6", *extra))
    assert_one_line_error(code, out, needle)
    assert snapshot(trained) == before


def test_missing_dataset_path(tmp_path: Path) -> None:
    code, out = run(train_cmd(tmp_path / "no_such_folder", tmp_path / "run"))
    assert_one_line_error(code, out, "no_such_folder")
    assert not (tmp_path / "run").exists()


def test_unreadable_checkpoint(fault_data: Path, trained: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "meta.json").write_text("{}")
    (garbage / "state").mkdir()
    (garbage / "state" / ".metadata").write_bytes(b"\x00not a pickle")
    before = snapshot(trained)
    code, out = run(train_cmd(fault_data, trained, "trainer.max_steps=6", f"trainer.resume={garbage}"))
    assert_one_line_error(code, out, "cannot load checkpoint")
    assert snapshot(trained) == before
