"""The file-list source (text and .npy lists) and tools/make_shards.py on a list."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sslframe.cli import run_cli
from sslframe.config.schema import DataConfig
from sslframe.data.build import build_train_data
from sslframe.data.shards import ShardIndex, read_samples
from sslframe.data.sources import FileListSource, ImageFolderSource
from sslframe.errors import UserError
from tests.helpers import ROOT


def make_shards_main() -> object:
    """tools/make_shards.py's ``main``, loaded in this process (no interpreter start-up)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("make_shards_tool", ROOT / "tools" / "make_shards.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return module.main


def test_text_list_with_labels_comments_and_relative_paths(image_folder: Path, tmp_path: Path) -> None:
    images = sorted(image_folder.rglob("*.png"))
    lines = ["# path label", "", f"{images[0]} 3", f"{images[1].relative_to(image_folder.parent)}"]
    listing = image_folder.parent / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    source = FileListSource(listing)
    assert [(s.key, s.label) for s in source.samples] == [(str(images[0]), 3), (lines[3], -1)]
    assert source.read(1)[1] == images[1].read_bytes()
    assert source.read(0)[2] == 3


@pytest.mark.parametrize("layout", ["paths", "rows", "fields"])
def test_npy_lists(image_folder: Path, tmp_path: Path, layout: str) -> None:
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))[:4]]
    if layout == "paths":
        array, labels = np.array(paths), [-1] * 4
    elif layout == "rows":
        array, labels = np.array([[p, str(i)] for i, p in enumerate(paths)]), [0, 1, 2, 3]
    else:
        array = np.array(list(zip(paths, [5, 6, 7, 8], strict=True)), dtype=[("path", "U200"), ("label", "i8")])
        labels = [5, 6, 7, 8]
    np.save(tmp_path / "list.npy", array)
    source = FileListSource(tmp_path / "list.npy")
    assert [s.key for s in source.samples] == paths and [s.label for s in source.samples] == labels


def test_bad_lists_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        FileListSource(tmp_path / "absent.txt")
    np.save(tmp_path / "objects.npy", np.array([{"path": "a"}], dtype=object))
    with pytest.raises(UserError, match=r"not a plain \.npy"):
        FileListSource(tmp_path / "objects.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(UserError, match="has shape"):
        FileListSource(tmp_path / "cube.npy")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="names no images"):
        FileListSource(tmp_path / "empty.txt")


def test_missing_file_in_a_list_is_a_bad_sample(image_folder: Path, tmp_path: Path) -> None:
    images = sorted(image_folder.rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join([str(p) for p in images[:7]] + ["gone.png"]) + "\n")
    cfg = OmegaConf.structured(DataConfig(source="filelist", path=str(tmp_path / "list.txt"), batch_size=4))
    cfg.num_workers = 0
    data = build_train_data(cfg, None, 0, 0, 1)
    data.set_position(0, 0)
    batches = list(data)
    assert sum(b.size for b in batches) == 7
    assert [(b.key, b.reason.split(":")[0]) for batch in batches for b in batch.bad] == [
        ("gone.png", "FileNotFoundError")
    ]


def test_make_shards_tool_on_a_file_list(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ImageFolderSource(image_folder)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{image_folder / s.key} {s.label}\n" for s in source.samples))
    main = make_shards_main()
    assert run_cli(main, [str(listing), str(tmp_path / "out"), "--per-shard", "10", "--keep-order"]) == 0
    assert "32 images in 4 shards" in capsys.readouterr().out
    index = ShardIndex(str(tmp_path / "out"))
    samples = [s for i in range(len(index.shards)) for s in read_samples(index.url(i))]
    assert [s["png"] for s in samples] == [source.read(i)[1] for i in range(32)]
    assert [int(s["cls"]) for s in samples] == [s.label for s in source.samples]
    assert run_cli(main, [str(listing), str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: give a shard size: --max-mb MB or --per-shard N"]
