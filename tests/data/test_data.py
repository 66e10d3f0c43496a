"""Sources, the deterministic sampler, augmentations, and unreadable samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sslframe.config.schema import MultiCropConfig
from sslframe.data.loader import BadSample, EpochSampler, ViewsDataset, collate_views, make_loader
from sslframe.data.sources import ImageFolderSource
from sslframe.data.transforms import MultiCropTransform
from sslframe.errors import UserError


def test_folder_source_labels_from_subfolders(image_folder: Path) -> None:
    source = ImageFolderSource(image_folder)
    assert source.classes == ["class_0", "class_1"]
    assert len(source) == 32
    assert [s.label for s in source.samples] == [0] * 16 + [1] * 16
    key, data, label = source.read(20)
    assert key == "class_1/004.png" and data[:4] == b"\x89PNG" and label == 1


def test_folder_without_subfolders_is_unlabelled(tmp_path: Path, image_folder: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(image_folder.rglob("*.png"))[:5]:
        (flat / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    source = ImageFolderSource(flat)
    assert len(source) == 5 and all(s.label == -1 for s in source.samples)


def test_missing_or_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        ImageFolderSource(tmp_path / "nope")
    with pytest.raises(UserError, match="no images"):
        ImageFolderSource(tmp_path)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_is_deterministic_and_disjoint_across_ranks(world: int) -> None:
    shards = [EpochSampler(100, seed=7, rank=r, world_size=world).indices(epoch=3) for r in range(world)]
    again = [EpochSampler(100, seed=7, rank=r, world_size=world).indices(epoch=3) for r in range(world)]
    assert shards == again
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat)) == (100 // world) * world
    assert EpochSampler(100, seed=7).indices(4) != EpochSampler(100, seed=7).indices(3)


def test_sampler_skip_equals_iterate_and_discard() -> None:
    sampler = EpochSampler(50, seed=1, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=7)
    assert list(sampler) == full[7:]
    assert len(sampler) == len(full) - 7


def tiny_transform() -> MultiCropTransform:
    cfg = OmegaConf.structured(
        MultiCropConfig(global_size=12, local_size=6, local_crops=2, blur_p=[1.0, 0.1], solarize_p=[0.0, 0.2])
    )
    return MultiCropTransform(cfg)


def test_augmentation_is_a_function_of_seed_epoch_and_index(image_folder: Path) -> None:
    ds = ViewsDataset(ImageFolderSource(image_folder), tiny_transform(), seed=5)
    a, b = ds[(1, 3)], ds[(1, 3)]
    assert [v.shape for v in a[0]] == [(3, 12, 12)] * 2 + [(3, 6, 6)] * 2
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    other_epoch = ds[(2, 3)]
    assert not torch.equal(a[0][0], other_epoch[0][0])
    before = torch.get_rng_state()
    ds[(0, 0)]
    assert torch.equal(before, torch.get_rng_state()), "loading must not disturb the training RNG"


def test_workers_produce_the_same_batches_as_the_main_process(image_folder: Path) -> None:
    ds = ViewsDataset(ImageFolderSource(image_folder), tiny_transform(), seed=5)
    batches = []
    for workers in (0, 2):
        sampler = EpochSampler(len(ds), seed=3)
        loader = make_loader(ds, sampler, batch_size=8, num_workers=workers)
        batches.append([b.views[0] for b in loader])
    assert len(batches[0]) == 4
    assert all(torch.equal(x, y) for x, y in zip(*batches, strict=True))


@pytest.mark.parametrize(
    "content", [b"", b"this is a text file, not a JPEG", "truncate"], ids=["empty", "text", "truncated"]
)
def test_unreadable_samples_are_skipped_and_reported(image_folder: Path, content: bytes | str) -> None:
    bad = image_folder / "class_0" / "bad.jpg"
    if content == "truncate":
        good = (image_folder / "class_0" / "000.png").read_bytes()
        bad.write_bytes(good[: len(good) // 2])
    else:
        bad.write_bytes(content)
    source = ImageFolderSource(image_folder)
    ds = ViewsDataset(source, tiny_transform(), seed=0)
    index = [s.key for s in source.samples].index("class_0/bad.jpg")
    item = ds[(0, index)]
    assert isinstance(item, BadSample) and item.key == "class_0/bad.jpg" and item.reason
    batch = collate_views([ds[(0, 0)], item, ds[(0, 1)]])
    assert batch.size == 2 and [b.key for b in batch.bad] == ["class_0/bad.jpg"]


def test_an_augmentation_error_is_raised_not_counted_as_bad_data(image_folder: Path) -> None:
    """Only reading and decoding failures make a sample unreadable; an exception raised by the
    augmentation code is a bug and must stop the run with its traceback."""

    def broken(image: torch.Tensor) -> list[torch.Tensor]:
        raise ValueError("bug in the augmentation")

    ds = ViewsDataset(ImageFolderSource(image_folder), broken, seed=0)
    with pytest.raises(ValueError, match="bug in the augmentation"):
        ds[(0, 0)]
