"""Fashion-MNIST preparation from IDX files (generated here in the IDX format)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from sslframe.data.fashion_mnist import CLASSES, FILES, prepare, read_idx
from sslframe.data.sources import ImageFolderSource
from sslframe.errors import UserError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_idx_dir(root: Path, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    root.mkdir(parents=True, exist_ok=True)
    for images_file, labels_file in FILES.values():
        write_idx(root / images_file, images)
        write_idx(root / labels_file, labels)
    return images, labels


def test_read_idx_round_trip(tmp_path: Path) -> None:
    images, labels = fake_idx_dir(tmp_path / "idx")
    np.testing.assert_array_equal(read_idx(tmp_path / "idx" / FILES["train"][0]), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "idx" / FILES["train"][1]), labels)


def test_prepare_writes_a_folder_the_source_reads(tmp_path: Path) -> None:
    images, labels = fake_idx_dir(tmp_path / "idx")
    counts = prepare(tmp_path / "out", tmp_path / "idx")
    assert counts == {"train": 12, "test": 12}
    source = ImageFolderSource(tmp_path / "out" / "train")
    assert source.classes == list(CLASSES)
    assert sorted(s.label for s in source.samples) == sorted(labels.tolist())
    from sslframe.data.transforms import decode

    key, data, label = source.read(0)
    index = int(Path(key).stem)
    assert label == labels[index]
    np.testing.assert_array_equal(decode(data)[0].numpy(), images[index])


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)
