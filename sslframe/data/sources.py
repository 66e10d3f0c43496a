"""Sources: index a data set and read its samples as ``(key, bytes, label)``.

``folder`` and ``filelist`` are map-style (sample i read on demand, ordered by the loader's
sampler); ``shards`` is a stream of tar shards (sslframe/data/shards.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from sslframe.data.shards import ShardIndex
from sslframe.errors import UserError
from sslframe.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class Sample:
    key: str
    label: int


class ListedSource:
    """A source whose samples are listed up front (``self.samples``): its size and keys."""

    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def key(self, index: int) -> str:
        return self.samples[index].key


class ImageFolderSource(ListedSource):
    """Images under a folder, found recursively and sorted by relative path.

    When every image sits in a first-level sub-folder, the sorted sub-folder names are the
    classes (labels 0..C-1); otherwise images are unlabelled (label -1).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data path '{root}' is not a folder (set data.path=DIR)")
        keys = sorted(self._scan(self.root, ""))
        if not keys:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under '{root}'")
        if all("/" in k for k in keys):
            self.classes = sorted({k.split("/", 1)[0] for k in keys})
            index = {c: i for i, c in enumerate(self.classes)}
            self.samples = [Sample(k, index[k.split("/", 1)[0]]) for k in keys]
        else:
            self.classes = []
            self.samples = [Sample(k, -1) for k in keys]

    @staticmethod
    def _scan(folder: Path, prefix: str) -> list[str]:
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    found += ImageFolderSource._scan(Path(entry.path), f"{prefix}{entry.name}/")
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(prefix + entry.name)
        return found

    def read(self, index: int) -> tuple[str, bytes, int]:
        sample = self.samples[index]
        return sample.key, (self.root / sample.key).read_bytes(), sample.label


class FileListSource(ListedSource):
    """Images named by a list, as large labs keep them: a text file with one ``path [label]``
    per line (blank lines and ``#`` comments skipped), or a ``.npy`` array of paths (1-D), of
    ``(path, label)`` rows, or with ``path`` and ``label`` fields. Relative paths are resolved
    against the list's folder; ``scheme://`` paths are read through fsspec. Unlabelled: -1.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"file list '{path}' does not exist (set data.path=LIST.txt or LIST.npy)")
        entries = self._load_npy() if self.path.suffix == ".npy" else self._load_text()
        if not entries:
            raise UserError(f"file list '{path}' names no images")
        self.samples = [Sample(key, label) for key, label in entries]
        self.classes: list[str] = []

    def _load_text(self) -> list[tuple[str, int]]:
        entries = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                entries.append((parts[0], int(parts[1])))
            else:
                entries.append((line, -1))
            if entries[-1][1] < -1:
                raise UserError(f"file list '{self.path}' line {number}: negative label {entries[-1][1]}")
        return entries

    def _load_npy(self) -> list[tuple[str, int]]:
        try:
            array = np.load(self.path, allow_pickle=False)
        except ValueError as exc:
            raise UserError(
                f"file list '{self.path}' is not a plain .npy array of strings ({str(exc).splitlines()[0]})"
            ) from None
        try:
            if array.dtype.names is not None:
                return [(_text(p), int(y)) for p, y in zip(array["path"], array["label"], strict=True)]
            if array.ndim == 1:
                return [(_text(p), -1) for p in array]
            if array.ndim == 2 and array.shape[1] == 2:
                return [(_text(p), int(_text(y))) for p, y in array]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"file list '{self.path}': unreadable entry ({exc})") from None
        raise UserError(
            f"file list '{self.path}' has shape {array.shape}; expected N paths, N x 2 (path, label) "
            "or fields 'path' and 'label'"
        )

    def read(self, index: int) -> tuple[str, bytes, int]:
        sample = self.samples[index]
        if "://" in sample.key:
            with fsspec.open(sample.key, "rb") as f:
                return sample.key, f.read(), sample.label
        return sample.key, (self.path.parent / sample.key).read_bytes(), sample.label


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


SOURCES: Registry[Callable[[Any, str], Any]] = Registry("data source", choices="data_sources")


@SOURCES.register("folder")
def _folder(cfg: Any, path: str) -> ImageFolderSource:
    return ImageFolderSource(path)


@SOURCES.register("filelist")
def _filelist(cfg: Any, path: str) -> FileListSource:
    return FileListSource(path)


@SOURCES.register("shards")
def _shards(cfg: Any, path: str) -> ShardIndex:
    return ShardIndex(path)


def build_source(cfg: Any, path: str | None = None) -> ImageFolderSource | FileListSource | ShardIndex:
    """The source named by ``cfg.source`` over ``path`` (default ``cfg.path``)."""
    return SOURCES.get(cfg.source)(cfg, path if path is not None else cfg.path)
