"""Checkpoints written atomically and loaded without executing pickled code.

Layout: ``<run.dir>/checkpoints/step_00001000/`` holding ``state.pt`` (tensors and plain
containers only, loaded with ``weights_only=True``) and ``meta.json`` (step, epoch, config,
config hash, and the SHA-256 of ``state.pt``). A checkpoint is first written to a hidden
temporary folder and renamed when complete, so a crash mid-write never leaves a folder that
looks complete; ``latest_checkpoint`` also verifies the checksum and skips torn ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslframe.errors import UserError

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep_last: int = 0) -> Path:
    """Write ``state`` and ``meta`` as ``folder/step_N`` atomically, then prune old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(step)
    tmp = folder / f".{checkpoint_name(step)}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        torch.save(state, tmp / STATE_FILE)
        meta = {**meta, "step": step, "sha256": _sha256(tmp / STATE_FILE)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint in '{folder}': {exc.strerror or exc}") from None
    if keep_last > 0:
        for old in complete_checkpoints(folder, verify=False)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META_FILE).read_text())


def is_complete(path: Path, verify: bool = True) -> bool:
    """A checkpoint is complete when its metadata parses and (if ``verify``) its state file
    matches the recorded checksum."""
    try:
        meta = read_meta(path)
        if not verify:
            return (path / STATE_FILE).is_file()
        return _sha256(path / STATE_FILE) == meta["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def complete_checkpoints(folder: Path, verify: bool = True) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_"))
    good = []
    for path in found:
        if is_complete(path, verify=verify):
            good.append(path)
        else:
            log.warning("checkpoint %s is incomplete or corrupted; ignoring it", path)
    return good


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint, checking newest first so torn ones are skipped."""
    if not folder.is_dir():
        return None
    for path in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_")), reverse=True):
        if is_complete(path):
            return path
        log.warning("checkpoint %s is incomplete or corrupted; falling back to an older one", path)
    return None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Accept a checkpoint folder, its ``state.pt``, or a run dir (newest checkpoint)."""
    p = Path(path)
    if p.is_file() and p.name == STATE_FILE:
        p = p.parent
    if (p / "checkpoints").is_dir():
        latest = latest_checkpoint(p / "checkpoints")
        if latest is None:
            raise UserError(f"no complete checkpoint under '{p / 'checkpoints'}'")
        return latest
    if not (p / META_FILE).is_file() or not (p / STATE_FILE).is_file():
        raise UserError(f"'{path}' is not a checkpoint (expected a folder with {STATE_FILE} and {META_FILE})")
    return p


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (state, meta); refuses pickled code and reports a torn file clearly."""
    try:
        meta = read_meta(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint metadata in '{path}': {exc}") from None
    try:
        state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot load checkpoint '{path}': {str(exc).splitlines()[0]}") from None
    return state, meta


def rng_state() -> dict[str, Any]:
    """Every RNG the loop may use, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
