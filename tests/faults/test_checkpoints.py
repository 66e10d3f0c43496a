"""Torn checkpoints, pruning, a full disk at checkpoint time, and crafted checkpoint files, each
provoked in a real run."""

from __future__ import annotations

import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sslframe.distributed.checkpoint import complete_checkpoints, is_complete
from tests.faults.common import losses, run, start, train_cmd, trained_run
from tests.helpers import ROOT


def damage(checkpoint: Path, how: str) -> None:
    shard = checkpoint / "state" / "__0_0.distcp"
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "missing_shard":
        shard.unlink()
    elif how == "bad_metadata":
        (checkpoint / "meta.json").write_text('{"step": ')
    elif how == "flipped_byte":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def torn_source(fault_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with checkpoints at steps 3 and 6 (each test damages a copy of step 6)."""
    return trained_run(fault_data, tmp_path_factory.mktemp("torn") / "run", "trainer.max_steps=6")


@pytest.mark.parametrize("how", ["truncated", "missing_shard", "bad_metadata", "flipped_byte"])
def test_torn_newest_checkpoint_is_reported_and_skipped(
    fault_data: Path, reference: dict[int, float], torn_source: Path, tmp_path: Path, how: str
) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(torn_source, cut)
    damage(cut / "checkpoints" / "step_00000006", how)
    code, out = run(train_cmd(fault_data, cut, "trainer.max_steps=9"))
    assert code == 0, out
    assert "step_00000006 is incomplete or corrupted; falling back" in out
    assert "resumed from" in out and "step_00000003 at step 3" in out
    after = {s: v for s, v in losses(cut).items() if s > 3}
    assert after == {s: reference[s] for s in range(4, 10)}


def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one(fault_data: Path, tmp_path: Path) -> None:
    """A process killed (SIGKILL) while it writes a checkpoint: the half-written one stays a hidden
    temporary folder, never taken for complete, and the run resumes from the one before it. A
    wide head (about 35 MB of weights and momentum) keeps each write open long enough to land in."""
    cut = tmp_path / "cut"
    wide = ["head.hidden_dims=[2048]", "head.output_dim=2048", "trainer.max_epochs=12"]
    proc = start(train_cmd(fault_data, cut, *wide))
    checkpoints = cut / "checkpoints"
    deadline = time.monotonic() + 300
    caught = None
    while caught is None and time.monotonic() < deadline and proc.poll() is None:
        # The first write is skipped: there must be a complete checkpoint to fall back on.
        writing = [p for p in checkpoints.glob(".step_*.tmp") if p.name != ".step_00000003.tmp"]
        if writing:
            os.killpg(proc.pid, signal.SIGKILL)
            caught = writing[0]
        else:
            time.sleep(0.001)
    proc.wait(timeout=60)
    assert caught is not None, "no checkpoint write was caught in progress"
    assert proc.returncode == -signal.SIGKILL
    assert caught.exists(), "the kill landed during the write: its temporary folder is left behind"
    torn_step = int(caught.name.split("_")[1].split(".")[0])
    complete = complete_checkpoints(checkpoints)
    assert complete and int(complete[-1].name.split("_")[1]) < torn_step
    code, out = run(train_cmd(fault_data, cut, *wide, "trainer.max_steps=" + str(torn_step + 3)))
    assert code == 0, out
    assert f"at step {torn_step - 3}" in out, out[-2000:]
    assert max(losses(cut)) == torn_step + 3


def test_keep_last_prunes_only_after_a_newer_checkpoint_is_complete(fault_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, out = run(train_cmd(fault_data, run_dir, "trainer.keep_last=2", "trainer.checkpoint_every=2"))
    assert code == 0, out
    names = [p.name for p in complete_checkpoints(run_dir / "checkpoints")]
    assert names == ["step_00000022", "step_00000024"]


def _limit_file_size(limit: int) -> None:
    # What a full disk does to a writer: writes past the limit fail (EFBIG) instead of SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_at_checkpoint_time_keeps_the_previous_checkpoint(
    fault_data: Path, trained_three_steps: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_three_steps, run_dir)
    image_folder = fault_data
    previous = run_dir / "checkpoints" / "step_00000003"
    shard = previous / "state" / "__0_0.distcp"
    limit = shard.stat().st_size // 2  # metrics and event files stay far below this
    code, out = run(train_cmd(image_folder, run_dir, "trainer.max_steps=6"), preexec_fn=lambda: _limit_file_size(limit))
    assert code == 2, out
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "could not write checkpoint" in error_lines[0], out
    assert "Traceback" not in out
    assert is_complete(previous)
    assert [p.name for p in complete_checkpoints(run_dir / "checkpoints")] == ["step_00000003"]
    assert not list((run_dir / "checkpoints").glob(".*tmp*")), "the failed temporary folder is removed"


def test_unwritable_checkpoint_folder_keeps_the_previous_checkpoint(
    fault_data: Path, trained_three_steps: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_three_steps, run_dir)
    folder = run_dir / "checkpoints"
    folder.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root ignores permission bits through CAP_DAC_OVERRIDE: run the trainer without it.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    try:
        args = [*prefix, sys.executable, *train_cmd(fault_data, run_dir, "trainer.max_steps=6")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:
        folder.chmod(0o755)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "could not write checkpoint" in error_lines[0], out
    assert "Traceback" not in out
    previous = folder / "step_00000003"
    assert is_complete(previous)
    assert [p.name for p in complete_checkpoints(folder)] == ["step_00000003"]


class Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("file", ["state/.metadata", "rank_00000.pt"])
def test_crafted_pickle_in_a_checkpoint_is_refused(
    fault_data: Path, trained_three_steps: Path, tmp_path: Path, file: str
) -> None:
    image_folder = fault_data
    source = trained_three_steps / "checkpoints" / "step_00000003"
    crafted = tmp_path / "crafted"
    shutil.copytree(source, crafted)
    (crafted / file).write_bytes(pickle.dumps(Exploit(tmp_path / "pwned"), protocol=2))
    code, out = run(train_cmd(image_folder, tmp_path / "other", "trainer.max_steps=6", f"trainer.resume={crafted}"))
    assert code == 2 and "error: cannot load checkpoint" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "pwned").exists(), "unpickling must not run code"
