"""Sharded checkpoints, written atomically and loaded without executing pickled code.

Layout: ``<run.dir>/checkpoints/step_00001000/`` holding

- ``state/``: model, optimizer and scaler as a ``torch.distributed.checkpoint`` (DCP) folder:
  every rank writes its own shards (``__<rank>_0.distcp``) and rank 0 the global index
  (``.metadata``). Keys are the model's own parameter names, whatever the strategy; DCP
  reshards on load, so a checkpoint written at one world size (and strategy) loads at another.
- ``rank_00000.pt``...: each rank's RNG streams, per-rank method state and counters.
- ``meta.json``: step, epoch, world size, config, config hash and the SHA-256 of every file.

A checkpoint is first written to a hidden temporary folder and renamed when complete, so a crash
mid-write never leaves a folder that looks complete; ``latest_checkpoint`` also verifies the
checksums and skips torn ones.

Untrusted files (docs/architecture.md, principle 8): DCP's own reader unpickles ``.metadata`` freely and
loads non-tensor values with ``weights_only=False``. Here the index is read by an unpickler that
admits only DCP's metadata classes, and values by ``torch.load(weights_only=True)``, so a crafted
checkpoint fails to load instead of running code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pathlib
import pickle
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.planner import ReadItem

from sslframe.errors import UserError

log = logging.getLogger(__name__)

STATE_DIR = "state"
INDEX_FILE = f"{STATE_DIR}/.metadata"
META_FILE = "meta.json"


class _IndexUnpickler(pickle.Unpickler):
    """Reads a DCP ``.metadata`` index, admitting only the classes such an index is made of."""

    _DCP_CLASSES = frozenset(
        {
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            (module == dcp_metadata.__name__ and name in self._DCP_CLASSES)
            or (module == "torch.distributed.checkpoint.filesystem" and name == "_StorageInfo")
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module == "pathlib" and name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"))
        )
        if not allowed:
            raise pickle.UnpicklingError(f"'{module}.{name}' is not allowed in a checkpoint index")
        if module == "pathlib":
            return getattr(pathlib, name)
        return super().find_class(module, name)


class SafeReader(FileSystemReader):
    """DCP's file-system reader with the index read by ``_IndexUnpickler``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        with open(Path(self.path) / ".metadata", "rb") as f:
            metadata = _IndexUnpickler(f).load()
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise pickle.UnpicklingError("the checkpoint index does not hold DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, but non-tensor values load with ``weights_only=True``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


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


def save_checkpoint(
    folder: Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    rank_state: dict[str, Any] | None = None,
    rank: int = 0,
    keep_last: int = 0,
) -> Path:
    """Write ``folder/step_N`` atomically: every rank writes its shards of ``state`` (model,
    optimizer; DTensors under FSDP, replicated tensors under DDP, which DCP writes once) and its
    own ``rank_state`` (RNG, per-rank method state), then rank 0 records the checksums in
    ``meta.json`` and renames the folder. Collective: call it on every rank."""
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
    error = _agree(error)
    if error is None:
        try:
            # Collective; DCP gathers every rank's outcome, so all ranks see a failure together.
            writer = FileSystemWriter(tmp / STATE_DIR, thread_count=1, sync_files=True)
            # Values every rank holds (all of DDP's state, FSDP's unsharded buffers such as batch
            # norm statistics) are written by rank 0, as under DDP, not load-balanced to any rank.
            planner = DefaultSavePlanner(dedup_save_to_lowest_rank=True)
            with _quiet_single_process():
                dcp.save(state, storage_writer=writer, planner=planner, no_dist=not _dist_up())
            if rank_state is not None:
                torch.save(rank_state, tmp / rank_file(rank))
        except (Exception, CheckpointException) as exc:  # DCP wraps each rank's error
            error = _as_os_error(exc)
        error = _agree(error)
    if rank == 0 and error is None:
        try:
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
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
    # Every rank learns of a failure before any raises, so none is left waiting.
    error = _agree(error)
    if error is not None:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint in '{folder}': {error.strerror or error}")
    return final


def _as_os_error(exc: BaseException) -> OSError:
    if isinstance(exc, OSError):
        return exc
    for inner in getattr(exc, "failures", {}).values():
        if isinstance(inner, OSError):
            return inner
    return OSError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _agree(error: OSError | None) -> OSError | None:
    """Collective: the first error any rank met (or ``None``), known to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return error
    flags = torch.tensor([0 if error is None else 1])
    dist.all_reduce(flags)
    if int(flags) == 0:
        return None
    return error or OSError(f"another rank failed to write its part ({int(flags)} rank(s) failed)")


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
        if INDEX_FILE not in files:
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
    """Accept a checkpoint folder, its ``meta.json``, or a run dir (newest checkpoint)."""
    p = Path(path)
    if p.is_file() and p.name == META_FILE:
        p = p.parent
    if (p / "checkpoints").is_dir():
        latest = latest_checkpoint(p / "checkpoints")
        if latest is None:
            raise UserError(f"no complete checkpoint under '{p / 'checkpoints'}'")
        return latest
    if not (p / META_FILE).is_file() or not (p / INDEX_FILE).is_file():
        raise UserError(f"'{path}' is not a checkpoint (expected a folder with {META_FILE} and {STATE_DIR}/)")
    return p


def _safe_load(file: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:
        # Any unpickling failure (torn file, pickled code refused by weights_only) is bad input.
        raise UserError(f"cannot load checkpoint file '{file}': {_first_line(exc)}") from None


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    try:
        return read_meta(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint metadata in '{path}': {exc}") from None


def read_index(path: Path) -> dcp_metadata.Metadata:
    """The DCP index of a checkpoint's state (names, shapes and dtypes of everything saved)."""
    try:
        return SafeReader(path / STATE_DIR).read_metadata()
    except (Exception, CheckpointException) as exc:
        raise UserError(f"cannot load checkpoint index '{path / INDEX_FILE}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    """One line saying what went wrong; for DCP's CheckpointException, the first rank's cause."""
    for failure in getattr(exc, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, BaseException):
            return _first_line(inner)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dist_up() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes one process whenever no process group is up; that is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def load_state(path: Path, state: dict[str, Any], required: tuple[str, ...] = ("model",)) -> list[str]:
    """Fill ``state`` (a state dict shaped as at save time, sharded as the current run shards
    it) from the checkpoint at ``path``, resharding as needed. Collective when a process group
    is up. Every tensor under the ``required`` sections must be in the checkpoint; other missing
    entries (optimizer state of parameters that never had a gradient) keep their values, and
    their flat names (``optimizer.state.<param>.<field>``) are returned."""
    index = read_index(path)
    saved = set(index.state_dict_metadata)
    tensors = _flat_tensors(state)
    absent = [key for key in tensors if key not in saved]
    missing = [key for key in absent if key.split(".", 1)[0] in required]
    if missing:
        raise UserError(f"checkpoint '{path}' does not fit this model: it lacks {missing[:3]}")
    for key, tensor in tensors.items():
        md = index.state_dict_metadata.get(key)
        if isinstance(md, dcp_metadata.TensorStorageMetadata) and tuple(md.size) != tuple(tensor.shape):
            raise UserError(
                f"checkpoint '{path}' does not fit this model: '{key}' has shape {list(md.size)} there, "
                f"{list(tensor.shape)} here"
            )
    try:
        with _quiet_single_process():
            dcp.load(
                state,
                storage_reader=SafeReader(path / STATE_DIR),
                planner=SafeLoadPlanner(allow_partial_load=True),
                no_dist=not _dist_up(),
            )
    except (Exception, CheckpointException) as exc:
        raise UserError(f"cannot load checkpoint '{path}': {_first_line(exc)}") from None
    return absent


def _flat_tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a nested state dict by DCP's flat names (``model.trunk.conv1.weight``,
    ``optimizer.param_groups.0.lr``)."""
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else []
    flat = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            flat[name] = value
        else:
            flat.update(_flat_tensors(value, name + "."))
    return flat


def load_checkpoint(path: Path, sections: tuple[str, ...] = ("model",)) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load whole (unsharded) tensors of the given sections in this process, with no process
    group: ``({"model": {name: tensor}}, meta)``. For evaluation, export and inspection."""
    meta = read_checkpoint_meta(path)
    index = read_index(path)
    flat = {
        key: torch.empty(tuple(md.size), dtype=md.properties.dtype)
        for key, md in index.state_dict_metadata.items()
        if isinstance(md, dcp_metadata.TensorStorageMetadata) and key.split(".", 1)[0] in sections
    }
    try:
        with _quiet_single_process():
            dcp.load(flat, storage_reader=SafeReader(path / STATE_DIR), planner=SafeLoadPlanner(), no_dist=True)
    except (Exception, CheckpointException) as exc:
        raise UserError(f"cannot load checkpoint '{path}': {_first_line(exc)}") from None
    out: dict[str, Any] = {name: {} for name in sections}
    for key, tensor in flat.items():
        section, name = key.split(".", 1)
        out[section][name] = tensor
    return out, meta


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
