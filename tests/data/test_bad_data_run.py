"""A run over shards holding broken samples: each one skipped, logged with its key and reason,
counted in metrics.jsonl and TensorBoard, and the run stopped once the bad fraction passes
``data.max_bad_fraction``."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslframe.config import compose_config
from sslframe.config.schema import DataConfig
from sslframe.data.build import build_train_data
from sslframe.data.shard_writer import write_shards
from sslframe.data.shards import ShardIndex, write_index
from sslframe.data.sources import ImageFolderSource
from sslframe.engine.trainer import train
from sslframe.errors import UserError
from tests.helpers import TINY, make_image_folder

BROKEN = {"truncated": "half", "empty": b"", "text": b"not an image, only named .jpg"}


def _broken_shards(root: Path) -> Path:
    """32 good images in shards of 8, plus one shard with a truncated JPEG, an empty member and
    a text member named .jpg."""
    folder = make_image_folder(root / "images")
    out = root / "shards"
    write_shards(ImageFolderSource(folder), str(out), per_shard=8)
    index = ShardIndex(str(out))
    good = (folder / "class_0" / "000.png").read_bytes()
    with tarfile.open(out / "broken.tar", "w") as tar:
        for i, (name, data) in enumerate(BROKEN.items()):
            payload = good[: len(good) // 2] if data == "half" else data
            info = tarfile.TarInfo(f"{name}.jpg")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            label = tarfile.TarInfo(f"{name}.cls")
            label.size = 1
            tar.addfile(label, io.BytesIO(str(i % 2).encode()))
    (out / "index.json").unlink()
    write_index(str(out), [*index.shards, type(index.shards[0])("broken.tar", len(BROKEN))], index.classes)
    return out


def test_bad_samples_are_logged_counted_and_stop_the_run_past_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shards = _broken_shards(tmp_path)
    run = tmp_path / "run"
    overrides = ["config=quickstart", *TINY, "data=shards", f"data.path={shards}", f"run.dir={run}"]
    overrides += ["data.batch_size=32", "trainer.max_epochs=10", "data.max_bad_fraction=0.01"]
    caplog.set_level(logging.WARNING, logger="sslframe.engine.trainer")
    # 35 samples, batch 32: 1 step per epoch; the limit is judged from 100 samples on (step 4).
    with pytest.raises(UserError, match=r"samples were unreadable, more than data\.max_bad_fraction=0\.01"):
        train(compose_config("train", overrides))

    # What the loader itself reports for the 3 steps before the stop, counted independently.
    cfg = OmegaConf.structured(DataConfig(source="shards", path=str(shards), batch_size=32, num_workers=0))
    data = build_train_data(cfg, None, 0, 0, 1)
    bad_keys: list[str] = []
    for epoch in range(3):
        data.set_position(epoch, 0)
        bad_keys += [b.key for batch in data for b in batch.bad]
    assert bad_keys, "the broken shard is read within three epochs"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["bad_samples"] == len(bad_keys)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [int(e.value) for e in events.Scalars("train/bad_samples")][-1] == len(bad_keys)
    warned = [r.getMessage() for r in caplog.records if "skipped unreadable sample" in r.getMessage()]
    assert len(warned) >= len(bad_keys)
    for name in BROKEN:
        assert any(f"broken.tar/{name} (" in w for w in warned), name
