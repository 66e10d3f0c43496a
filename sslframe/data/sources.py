"""Sources: index a dataset as an ordered list of samples and read each one as raw bytes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslframe.errors import UserError
from sslframe.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class Sample:
    key: str
    label: int


class ImageFolderSource:
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

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[str, bytes, int]:
        sample = self.samples[index]
        return sample.key, (self.root / sample.key).read_bytes(), sample.label


SOURCES: Registry[Callable[[Any, str], Any]] = Registry("data source")


@SOURCES.register("folder")
def _folder(cfg: Any, path: str) -> ImageFolderSource:
    return ImageFolderSource(path)


def build_source(cfg: Any, path: str | None = None) -> ImageFolderSource:
    """The source named by ``cfg.source`` over ``path`` (default ``cfg.path``)."""
    return SOURCES.get(cfg.source)(cfg, path if path is not None else cfg.path)
