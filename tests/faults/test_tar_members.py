"""Untrusted tar shards stay inert (docs/architecture.md, principle 8): members named with absolute paths
or ``..`` are read as bytes in memory and never written to disk; links are not followed."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslframe.data.shards import ShardedImageStream, ShardIndex, count_samples


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def test_absolute_and_dotdot_members_are_read_in_memory_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex
    shards = tmp_path / "deep" / "shards"
    shards.mkdir(parents=True)
    work = tmp_path / "deep" / "work"
    work.mkdir()
    escapes = {
        f"/tmp/sslframe_{tag}_abs.png": 10,
        f"../sslframe_{tag}_up.png": 20,
        f"ok/../../../sslframe_{tag}_nested.png": 30,
        f"plain_{tag}.png": 40,
    }
    with tarfile.open(shards / "evil.tar", "w") as tar:
        for name, value in escapes.items():
            data = _png(value)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"link_{tag}.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    count = count_samples(str(shards / "evil.tar"))
    assert count == len(escapes), "the symbolic link is not a sample"
    index = {"format": "sslframe-shards/1", "shards": [{"name": "evil.tar", "count": count}]}
    (shards / "index.json").write_text(json.dumps(index))

    before = _files(tmp_path)
    monkeypatch.chdir(work)  # a relative write would land here or one level up
    stream = ShardedImageStream(ShardIndex(str(shards)), None, 0, 1, shuffle=False, drop_last=False)
    stream.set_position(0, 0)
    items = list(stream)

    # Every member's bytes arrived (decoded from memory), in member order.
    assert [int(image[0, 0, 0]) for image, _, _ in items] == list(escapes.values())
    assert all(isinstance(image, torch.Tensor) for image, _, _ in items)
    assert _files(tmp_path) == before, "nothing is written next to the shards or the working folder"
    for name in escapes:
        basename = os.path.basename(name)
        assert not Path("/tmp", basename).exists() and not (tmp_path / basename).exists()
