"""The ``data`` group: where images come from and how they are batched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING

from sslframe.registry import Choices


@dataclass
class DataConfig:
    """Where images come from and how they are batched (``batch_size`` is per process)."""

    name: str = "folder"
    source: str = "folder"
    path: str = MISSING
    # Held-out split used by evaluation (kNN memory bank is ``path``, queries are ``val_path``).
    val_path: str = ""
    batch_size: int = 64
    num_workers: int = 4
    prefetch_factor: int = 2
    persistent_workers: bool = True
    # Page-locked batches for faster host-to-GPU copies (used only when training on CUDA).
    pin_memory: bool = True
    drop_last: bool = True
    # Stop when more than this fraction of the samples read so far were unreadable.
    max_bad_fraction: float = 0.01
    # shards: samples each loader worker holds for buffer-level shuffling (0: shard order only).
    shuffle_buffer: int = 1000
    choices: ClassVar[Choices] = {"source": "data_sources"}
