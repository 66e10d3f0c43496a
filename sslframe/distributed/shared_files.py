"""Outputs that several ranks write into one folder, which must be on a filesystem every rank
mounts (rank 0 then indexes what all of them wrote), and refusals that every rank must share.

A folder that is local to each node (``/tmp``, a node-local SSD) would let rank 0 index only its
own node's files, silently leaving the others' samples out. ``require_everywhere`` turns that into
one clear error on every rank at once; ``raise_on_every_rank`` does the same for a check that
only some ranks fail (each node looking at its own disk), so no rank is left waiting at a barrier
for one that stopped.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from sslframe.errors import UserError

# How long a rank waits for another rank's files to appear before calling them missing: a
# network filesystem may serve a cached directory listing, or a cached "no such file", for a
# while after another machine wrote the file (NFS caches attributes for up to a minute).
VISIBLE_WITHIN_S = 60.0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not _distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def raise_on_every_rank(error: str | None) -> None:
    """Call on every rank with this rank's refusal (or ``None``): raises the first rank's as a
    ``UserError`` on every rank, or returns on every rank when none refused."""
    for message in all_gather_objects(error):
        if message is not None:
            raise UserError(message)


def missing_files(folder: Path, names: Sequence[str], wait_s: float | None = None) -> list[str]:
    """Those of ``names`` that are not files in ``folder``, after waiting up to ``wait_s`` seconds
    (``VISIBLE_WITHIN_S`` by default) for them to appear. A directory listing first (one call, not
    a lookup per file: a billion-image embedding has hundreds of thousands of pieces), then a
    lookup of each name the listing lacks, which a stale cached listing cannot hide."""
    deadline = time.monotonic() + (VISIBLE_WITHIN_S if wait_s is None else wait_s)
    missing = list(names)
    while True:
        present = {entry.name for entry in os.scandir(folder)} if folder.is_dir() else set()
        missing = [n for n in missing if n not in present and not (folder / n).is_file()]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(1.0)


def require_visible(folder: Path, names: Sequence[str], what: str, setting: str) -> None:
    """Call on every rank once ``names`` (file names, the same list on every rank) are written
    into ``folder``. The first rank on each machine looks (ranks of one machine see the same
    disks); when one of them misses some (``folder`` is not shared between the machines, or not
    readable), every rank raises the same ``UserError``. ``what`` names the files and ``setting``
    the option that chose the folder."""
    hosts = all_gather_objects(socket.gethostname())
    rank = dist.get_rank() if _distributed() else 0
    error = None
    if hosts.index(hosts[rank]) == rank:
        try:
            missing = missing_files(folder, names)
        except OSError as exc:
            error = f"rank {rank} cannot list '{folder}' ({exc.strerror or exc}): {setting} must be readable"
        else:
            if missing:
                error = (
                    f"rank {rank} cannot see {len(missing)} of the {len(names)} {what} that the ranks wrote to "
                    f"'{folder}' (such as {missing[0]}): {setting} must be a folder that every rank shares "
                    "(a network filesystem every node mounts, not a node-local disk)"
                )
    raise_on_every_rank(error)


def require_everywhere(folder: Path, written: Sequence[str], what: str, setting: str) -> list[str]:
    """``require_visible`` for files whose names only the rank that wrote them knows: ``written``
    is this rank's. Returns every rank's names, in rank order."""
    names = [name for share in all_gather_objects(list(written)) for name in share]
    require_visible(folder, names, what, setting)
    return names
