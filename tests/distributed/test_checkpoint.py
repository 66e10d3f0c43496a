"""Checkpoint files: atomic layout, torn checkpoints skipped, pickled code refused, pruning."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from sslframe.distributed import checkpoint as ckpt
from sslframe.errors import UserError


def save(folder: Path, step: int, keep_last: int = 0) -> Path:
    state = {"model": {"w": torch.full((3,), float(step))}, "optimizer": {"state": {}, "param_groups": []}}
    return ckpt.save_checkpoint(
        folder, step, state, {"config_hash": "x"}, rank_state={"rng": ckpt.rng_state()}, keep_last=keep_last
    )


def test_layout_and_round_trip(tmp_path: Path) -> None:
    path = save(tmp_path, 7)
    assert path.name == "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "rank_00000.pt", "state.pt"]
    assert not list(tmp_path.glob(".*tmp*")), "the temporary folder is renamed, not left behind"
    state, meta = ckpt.load_checkpoint(path)
    assert meta["step"] == 7 and set(meta["files"]) == {"rank_00000.pt", "state.pt"}
    assert torch.equal(state["model"]["w"], torch.full((3,), 7.0))
    assert ckpt.load_rank_state(path, 0) is not None and ckpt.load_rank_state(path, 1) is None


@pytest.mark.parametrize("damage", ["truncate", "delete_rank", "bad_meta", "unfinished"])
def test_torn_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, damage: str) -> None:
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    if damage == "truncate":
        data = (newest / "state.pt").read_bytes()
        (newest / "state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "delete_rank":
        (newest / "rank_00000.pt").unlink()
    elif damage == "bad_meta":
        (newest / "meta.json").write_text("{not json")
    else:
        os.rename(newest, tmp_path / ".step_00000002.tmp")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_00000001"


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, 1)

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (path / "state.pt").write_bytes(pickle.dumps({"model": Exploit()}, protocol=2))
    with pytest.raises(UserError, match="cannot load checkpoint file"):
        ckpt.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_keep_last_prunes_only_older_complete_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path)
