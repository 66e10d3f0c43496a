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
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "rank_00000.pt", "state"]
    assert sorted(p.name for p in (path / "state").iterdir()) == [".metadata", "__0_0.distcp"]
    assert not list(tmp_path.glob(".*tmp*")), "the temporary folder is renamed, not left behind"
    state, meta = ckpt.load_checkpoint(path)
    assert meta["step"] == 7
    assert set(meta["files"]) == {"rank_00000.pt", "state/.metadata", "state/__0_0.distcp"}
    assert torch.equal(state["model"]["w"], torch.full((3,), 7.0))
    # Filling a state dict skeleton, as a resuming trainer does.
    skeleton = {"model": {"w": torch.zeros(3)}, "optimizer": {"state": {}, "param_groups": []}}
    assert ckpt.load_state(path, skeleton) == []
    assert torch.equal(skeleton["model"]["w"], torch.full((3,), 7.0))
    assert ckpt.load_rank_state(path, 0) is not None and ckpt.load_rank_state(path, 1) is None


def test_a_model_the_checkpoint_does_not_hold_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, 1)
    with pytest.raises(UserError, match="does not fit this model"):
        ckpt.load_state(path, {"model": {"w": torch.zeros(3), "other": torch.zeros(2)}})
    with pytest.raises(UserError, match=r"'model.w' has shape \[3\] there, \[4\] here"):
        ckpt.load_state(path, {"model": {"w": torch.zeros(4)}})


@pytest.mark.parametrize("damage", ["truncate", "delete_shard", "delete_rank", "bad_meta", "unfinished"])
def test_torn_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path, damage: str) -> None:
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    if damage == "truncate":
        shard = newest / "state" / "__0_0.distcp"
        shard.write_bytes(shard.read_bytes()[:-5])
    elif damage == "delete_shard":
        (newest / "state" / "__0_0.distcp").unlink()
    elif damage == "delete_rank":
        (newest / "rank_00000.pt").unlink()
    elif damage == "bad_meta":
        (newest / "meta.json").write_text("{not json")
    else:
        os.rename(newest, tmp_path / ".step_00000002.tmp")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_00000001"


class Exploit:
    """Unpickling this runs a shell command (the attack a crafted checkpoint file carries)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned > " + str(self.target),))


def test_crafted_index_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, 1)
    (path / "state" / ".metadata").write_bytes(pickle.dumps(Exploit(tmp_path / "pwned"), protocol=2))
    with pytest.raises(UserError, match="is not allowed in a checkpoint index"):
        ckpt.load_checkpoint(path)
    with pytest.raises(UserError, match="is not allowed in a checkpoint index"):
        ckpt.load_state(path, {"model": {"w": torch.zeros(3)}})
    assert not (tmp_path / "pwned").exists()


def test_crafted_value_and_rank_file_are_refused(tmp_path: Path) -> None:
    # Non-tensor values are stored as torch.save bytes inside the shards; DCP's own planner
    # loads them with weights_only=False. Saving an object whose unpickling runs code writes
    # exactly what an attacker would plant; loading it must refuse.
    state = {"model": {"w": torch.ones(3)}, "extra": Exploit(tmp_path / "pwned")}
    path = ckpt.save_checkpoint(tmp_path, 1, state, {}, rank_state={"rng": ckpt.rng_state()})
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(UserError, match=r"cannot load checkpoint.*[Ww]eights only load failed"):
        ckpt.load_state(path, {"model": {"w": torch.zeros(3)}, "extra": None})
    torch.save(Exploit(tmp_path / "pwned"), path / "rank_00000.pt")
    with pytest.raises(UserError, match="cannot load checkpoint file"):
        ckpt.load_rank_state(path, 0)
    assert not (tmp_path / "pwned").exists()


def test_keep_last_prunes_only_older_complete_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path)
