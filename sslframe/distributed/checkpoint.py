"""Checkpoints written atomically and loaded without executing pickled code.

Layout: ``<run.dir>/checkpoints/step_00001000/`` holding ``state.pt`` (model and optimizer,
shared by all ranks), ``rank_00000.pt``... (each rank's RNG and per-rank method state), all
tensors and plain containers loaded with ``weights_only=True``, and ``meta.json`` (step,
epoch, world size, config, config hash, and the SHA-256 of every file). A checkpoint is first
written to a hidden temporary folder and renamed when complete, so a crash mid-write never
leaves a folder that looks complete; ``latest_checkpoint`` also verifies the checksums and
skips torn ones.
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
import torch.distributed as dist

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


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    folder: Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    rank_state: dict[str, Any] | None = None,
    rank: int = 0,
    keep_last: int = 0,
) -> Path:
    """Write ``folder/step_N`` atomically: rank 0 writes the shared ``state`` (model, optimizer),
    every rank its own ``rank_state`` (RNG, per-rank method state), then rank 0 records the
    checksums in ``meta.json`` and renames the folder. Collective: call it on every rank."""
    final = folder / checkpoint_name(step)
    tmp = folder / f".{checkpoint_name(step)}.tmp"
    error: OSError | None = None
    if rank == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        except OSError as exc:
            error = exc
    _barrier()
    try:
        if rank_state is not None and tmp.is_dir():
            torch.save(rank_state, tmp / rank_file(rank))
        if rank == 0 and error is None:
            torch.save(state, tmp / STATE_FILE)
    except OSError as exc:
        error = exc
    _barrier()
    if rank == 0 and error is None:
        try:
            files = sorted(p.name for p in tmp.iterdir())
            meta = {**meta, "step": step, "files": {name: _sha256(tmp / name) for name in files}}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(folder)
        except OSError as exc:
            error = exc
    if rank == 0 and error is None and keep_last > 0:
        for old in complete_checkpoints(folder, verify=False)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    # Every rank reaches this barrier before a failing rank raises, so none is left waiting.
    _barrier()
    if error is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint in '{folder}': {error.strerror or error}")
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
    """A checkpoint is complete when its metadata parses and every file it lists exists and
    (if ``verify``) matches the recorded checksum."""
    try:
        files = read_meta(path)["files"]
        if STATE_FILE not in files:
            return False
        if not verify:
            return all((path / name).is_file() for name in files)
        return all(_sha256(path / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
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


def _safe_load(file: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        # Any unpickling failure (torn file, pickled code refused by weights_only) is bad input.
        raise UserError(f"cannot load checkpoint file '{file}': {str(exc).splitlines()[0]}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load (shared state, meta); refuses pickled code and reports a torn file clearly."""
    try:
        meta = read_meta(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint metadata in '{path}': {exc}") from None
    return _safe_load(path / STATE_FILE, map_location), meta


def load_rank_state(path: Path, rank: int, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """This rank's own state, or ``None`` when the checkpoint was written by fewer ranks."""
    file = path / rank_file(rank)
    return _safe_load(file, map_location) if file.is_file() else None


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
