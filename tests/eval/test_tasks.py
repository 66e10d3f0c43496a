"""The evaluation tasks end to end on generated images whose classes are separable by intensity."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

from sslframe.errors import UserError
from tests.distributed.harness import run_distributed
from tests.helpers import ROOT, TINY, make_image_folder, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A one-step tiny run, train (3 x 12 images) and val (3 x 6) folders."""
    from sslframe.engine.trainer import Trainer

    root = tmp_path_factory.mktemp("eval")
    make_image_folder(root / "train", classes=3, per_class=12, seed=0)
    make_image_folder(root / "val", classes=3, per_class=6, seed=1)
    cfg = tiny_config(root / "train", root / "run", "trainer.max_steps=1")
    Trainer(cfg).fit()
    return root


def _eval(root: Path, task: str, *overrides: str) -> dict:
    from sslframe.config import compose_config
    from sslframe.eval.run import run_eval

    cfg = compose_config(
        "eval",
        [
            f"eval={task}",
            f"checkpoint={root / 'run'}",
            "data=folder",
            f"data.path={root / 'train'}",
            f"data.val_path={root / 'val'}",
            "eval.num_workers=0",
            "eval.batch_size=16",
            *overrides,
        ],
    )
    out = run_eval(cfg)
    assert json.loads(Path(out["path"]).read_text()) == out["result"]
    return out["result"]


def _extract_share(rank: int, world: int, root: str, out: str) -> int:
    """One rank of a two-process extraction (the harness made the gloo process group)."""
    from omegaconf import OmegaConf

    from sslframe.data.sources import build_source
    from sslframe.data.transforms import eval_transform
    from sslframe.eval.features import iter_features, load_trunk
    from sslframe.eval.store import write_shards

    trunk, run_cfg, _ = load_trunk(f"{root}/run")
    data = OmegaConf.create({"source": "folder"})
    transform = eval_transform(run_cfg.transform.global_size, run_cfg.transform.mean, run_cfg.transform.std)
    written = 0
    for split in ("train", "val"):
        keys = [s.key for s in build_source(data, f"{root}/{split}").samples]
        batches = iter_features(
            trunk, data, f"{root}/{split}", transform, 16, 0, torch.device("cpu"), None, rank, world
        )
        written += write_shards(batches, keys.__getitem__, Path(out, split), rank, 5, {"split": split}, world)
    return written


def test_extract_across_two_ranks_matches_one_process(pretrained: Path) -> None:
    from sslframe.eval.store import read_features

    single = _eval(pretrained, "extract", f"eval.out_dir={pretrained / 'one'}", "eval.shard_size=5")
    assert single["num_samples"] == {"train": 36, "val": 18}
    # Strided shares: rank 0 takes 18 + 9 samples, rank 1 the other 18 + 9.
    assert run_distributed(_extract_share, 2, str(pretrained), str(pretrained / "two")) == [27, 27]
    for split, n in (("train", 36), ("val", 18)):
        one, two = read_features(pretrained / "one" / split), read_features(pretrained / "two" / split)
        index = json.loads((pretrained / "two" / split / "index.json").read_text())
        assert {name.split("_shard")[0] for name in index["shards"]} == {"features_rank_00000", "features_rank_00001"}
        assert torch.equal(one.indices, torch.arange(n)) and torch.equal(two.indices, one.indices)
        assert torch.equal(two.labels, one.labels) and two.keys == one.keys and one.keys[0] == "class_0/000.png"
        torch.testing.assert_close(two.features, one.features)


def _write_shards_three_ways(rank: int, world: int, root: str) -> list[str]:
    """One rank's shard of an extraction written three times (one process group, so the test
    starts the ranks once): into ``a/`` and ``b/`` each rank writes to a folder of its own on a
    machine of its own, as when eval.out_dir is a node-local disk; into ``shared/`` both write to
    one folder on one machine."""
    import socket

    from sslframe.distributed import shared_files
    from sslframe.errors import UserError
    from sslframe.eval.store import write_shards

    shared_files.VISIBLE_WITHIN_S = 0.5  # a missing shard will never appear here
    hostname = socket.gethostname
    outcomes = []
    for case, own_disk in (("a", True), ("b", True), ("shared", False)):
        folder = Path(root, case, f"node{rank}") if own_disk else Path(root, case)
        socket.gethostname = (lambda: f"node{rank}") if own_disk else hostname  # type: ignore[assignment]
        batches = [(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), torch.arange(3) * world + rank)]
        try:
            write_shards(batches, str, folder, rank, 5, {"split": "train"}, world)
            outcomes.append("written")
        except UserError as exc:
            outcomes.append(str(exc))
    return outcomes


def test_extract_needs_a_folder_every_rank_shares(tmp_path: Path) -> None:
    """Ranks whose output folders are not one folder (node-local disks) all stop with one clear
    error, whichever machine misses files, instead of rank 0 indexing only its own shards."""
    shard = "features_rank_{:05d}_shard_0000.safetensors"
    # In b/, rank 0's machine happens to hold a file of rank 1's name; rank 1's does not see rank 0's.
    (tmp_path / "b" / "node0").mkdir(parents=True)
    (tmp_path / "b" / "node0" / shard.format(1)).touch()
    (a0, b0, shared0), (a1, b1, shared1) = run_distributed(_write_shards_three_ways, 2, str(tmp_path))
    assert a0 == a1
    wrote_to = f"wrote to '{tmp_path / 'a' / 'node0'}'"
    assert f"rank 0 cannot see 1 of the 2 feature shards that the ranks {wrote_to}" in a0
    assert shard.format(1) in a0 and "eval.out_dir must be a folder that every rank shares" in a0
    assert not list((tmp_path / "a").glob("*/index.json"))
    assert b0 == b1 and "rank 1 cannot see 1 of the 2 feature shards" in b0
    assert shard.format(0) in b0 and not list((tmp_path / "b").glob("*/index.json"))
    # One folder for both: written, and the index lists both ranks' shards.
    assert [shared0, shared1] == ["written"] * 2
    index = json.loads((tmp_path / "shared" / "index.json").read_text())
    assert index["shards"] == [shard.format(0), shard.format(1)]


def test_extract_over_an_earlier_extraction(pretrained: Path) -> None:
    """A second extraction into the same folder is refused and loses nothing; with
    eval.overwrite=true it replaces the first one whole (no shard of the earlier, finer sharding is
    listed, the kNN result of the old features goes); train and val from different extractions
    are refused when read back."""
    from sslframe.eval.store import read_features

    out = pretrained / "again"
    first = _eval(pretrained, "extract", f"eval.out_dir={out}", "eval.shard_size=5")
    assert len(list((out / "train").glob("*.safetensors"))) == 8  # 36 images, 5 per shard
    _eval(pretrained, "knn", f"eval.features={out}", "eval.ks=[1]")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"already holds train/ features extracted from .*eval\.overwrite=true"):
        _eval(pretrained, "extract", f"eval.out_dir={out}", "eval.random_init=true")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched

    second = _eval(pretrained, "extract", f"eval.out_dir={out}", "eval.shard_size=100", "eval.overwrite=true")
    assert second["num_samples"] == first["num_samples"] == {"train": 36, "val": 18}
    assert not (out / "knn.json").exists()  # it described the replaced features
    for split, n in (("train", 36), ("val", 18)):
        assert [p.name for p in (out / split).glob("*.safetensors")] == ["features_rank_00000_shard_0000.safetensors"]
        features = read_features(out / split)
        assert torch.equal(features.indices, torch.arange(n))  # each sample once

    # An extraction stopped before its index: its shards alone still count as features.
    (out / "val" / "index.json").unlink()
    with pytest.raises(UserError, match=r"shards of an unfinished or unreadable extraction in val/"):
        _eval(pretrained, "extract", f"eval.out_dir={out}", "eval.splits=[val]")
    # Val alone again, from the untrained network: a folder whose halves differ.
    _eval(pretrained, "extract", f"eval.out_dir={out}", "eval.splits=[val]", "eval.random_init=true",
          "eval.overwrite=true")  # fmt: skip
    assert read_features(out / "train").meta["random_init"] is False
    with pytest.raises(
        UserError, match=r"train/ and val/ .* different extractions \(random_init: train False, val True\)"
    ):
        _eval(pretrained, "knn", f"eval.features={out}")


def test_probes_on_separable_images(pretrained: Path) -> None:
    features = pretrained / "cached"
    _eval(pretrained, "extract", f"eval.out_dir={features}")
    cached = f"eval.features={features}"
    linear = _eval(pretrained, "linear", cached, "eval.epochs=30", "eval.probe_batch_size=12")
    # Classes are intensity levels (tests/helpers.py): any trunk's pooled features separate them.
    assert linear["top1"] >= 0.9 and linear["top5"] == 1.0
    assert Path(cached.split("=")[1], "linear.json").is_file()
    knn = _eval(pretrained, "knn", cached, "eval.ks=[1,5]")
    assert knn["top1"] == _eval(pretrained, "knn", "eval.ks=[1,5]")["top1"]  # cached == fresh features
    shots = _eval(pretrained, "lowshot", cached, "eval.probe=knn", "eval.k=1", "eval.per_class=[2]", "eval.seeds=[0,1]")
    # 1% of 36 images over 3 classes rounds to 1 per class (at least one); 10%: round(1.2) = 1.
    assert {name: r["per_class"] for name, r in shots["subsets"].items()} == {"1%": 1, "10%": 1, "2_per_class": 2}
    assert all(0.0 <= r["top1_mean"] <= 1.0 and r["top1_std"] >= 0.0 for r in shots["subsets"].values())
    augmented = _eval(pretrained, "linear", "eval.augment=true", "eval.epochs=2", "eval.batch_norm=true")
    assert augmented["augment"] and 0.0 <= augmented["top1"] <= 1.0
    with pytest.raises(UserError, match=r"no index\.json"):
        _eval(pretrained, "linear", f"eval.features={pretrained / 'nothing'}")


def test_finetune_learns_the_classes(pretrained: Path) -> None:
    result = _eval(pretrained, "finetune", "eval.epochs=2", "eval.batch_size=8", "eval.lr=0.01", "eval.layer_decay=0.8")
    assert result["top1"] >= 0.6  # chance is 1/3


def _tool(name: str, monkeypatch) -> dict:
    """A tool script's globals, loaded in this process (its ``main`` runs without a new interpreter)."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    return runpy.run_path(str(ROOT / "tools" / name), run_name="tool_under_test")


def test_cli_prints_one_summary_line(pretrained: Path, monkeypatch, capsys) -> None:
    main = _tool("eval.py", monkeypatch)["main"]
    args = [f"checkpoint={pretrained / 'run'}", "data=folder", f"data.path={pretrained / 'train'}"]
    args += [f"data.val_path={pretrained / 'val'}", "eval.ks=[3]", "eval.num_workers=0", "eval.random_init=true"]
    assert main(["knn", *args]) == 0
    summary, where = capsys.readouterr().out.strip().splitlines()[-2:]
    assert json.loads(summary)["task"] == "knn"
    assert where == f"results: {pretrained / 'run' / 'eval' / 'knn_random_init.json'}"
    with pytest.raises(UserError, match="unknown evaluation 'probe'; valid choices: embed, extract, finetune, knn"):
        main(["probe", *args])


def test_export_tool_writes_weights_that_import_back(pretrained: Path, monkeypatch) -> None:
    from sslframe.eval.features import load_trunk
    from sslframe.eval.interchange import load_trunk_weights
    from sslframe.models.trunks import build_trunk

    out = pretrained / "trunk.safetensors"
    main = _tool("export.py", monkeypatch)["main"]
    assert main(["export", str(pretrained / "run"), "--naming", "torchvision", "--out", str(out)]) == 0
    trunk, run_cfg, _ = load_trunk(pretrained / "run")
    fresh = build_trunk(run_cfg.trunk)
    assert load_trunk_weights(fresh, out, "torchvision").ok
    for key, value in trunk.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_plots_of_a_run(pretrained: Path) -> None:
    from PIL import Image

    from sslframe.eval.plots import plot_run, project_2d

    written = plot_run(pretrained / "run", max_points=12)
    assert [p.name for p in written] == ["loss_lr.png", "collapse.png", "embeddings.png"]
    for path in written:
        assert path.parent == pretrained / "run" / "plots" and Image.open(path).size[0] > 100
    # The PCA fallback keeps the direction of largest variance on the first axis.
    points = torch.tensor([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.1], [0.0, 0.5, 0.0], [0.0, -0.5, 0.0]])
    xy, _ = project_2d(points)
    assert xy.shape == (4, 2) and xy[:, 0].abs().argmax() in (0, 1)


def test_evaluates_imported_torchvision_weights(pretrained: Path, tmp_path: Path) -> None:
    import torchvision

    from sslframe.config import compose_config
    from sslframe.eval.run import run_eval

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "tv.pth")
    args = [f"checkpoint={tmp_path / 'tv.pth'}", "data=folder", f"data.path={pretrained / 'train'}"]
    args += [f"data.val_path={pretrained / 'val'}", "eval.num_workers=0", "eval.layout=torchvision"]
    args += ["eval.image_size=32", "eval.ks=[1]"]
    out = run_eval(compose_config("eval", ["eval=knn", *args, "eval.arch=resnet18"]))
    assert out["path"] == str(tmp_path / "eval" / "tv" / "knn.json") and out["result"]["feature_dim"] == 512
    with pytest.raises(UserError, match=r"does not match the trunk as layout torchvision: missing \d+"):
        run_eval(compose_config("eval", ["eval=knn", *args, "eval.arch=resnet34"]))


def test_knn_reads_tar_shards_like_the_folder(pretrained: Path) -> None:
    from sslframe.data.shard_writer import write_shards
    from sslframe.data.sources import ImageFolderSource

    for split in ("train", "val"):
        write_shards(
            ImageFolderSource(pretrained / split), str(pretrained / f"{split}_shards"), per_shard=10, seed=None
        )
    folder = _eval(pretrained, "knn", "eval.ks=[1,3]", "out=" + str(pretrained / "knn_folder.json"))
    shards = _eval(
        pretrained,
        "knn",
        "eval.ks=[1,3]",
        "data.source=shards",
        f"data.path={pretrained / 'train_shards'}",
        f"data.val_path={pretrained / 'val_shards'}",
        "out=" + str(pretrained / "knn_shards.json"),
    )
    assert shards["top1"] == folder["top1"] and shards["num_train"] == 36


def test_raw_pixel_baseline_is_knn_on_the_normalised_images(pretrained: Path) -> None:
    """eval.raw_pixels=true: the run's evaluation view (here 16 px images at a 16 px view:
    normalisation only) flattened into features, compared with a 1-NN and 3-NN written out here
    on the same images decoded with PIL."""
    import numpy as np
    from PIL import Image

    from sslframe.config import compose_config

    result = _eval(pretrained, "knn", "eval.ks=[1,3]", "eval.raw_pixels=true")
    assert result["raw_pixels"] and result["feature_dim"] == 3 * 16 * 16  # TINY's 16 px view

    def pixels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        run = compose_config("train", ["config=quickstart", *TINY, "data=folder", "data.path=unused"])
        mean, std = torch.tensor(run.transform.mean)[:, None, None], torch.tensor(run.transform.std)[:, None, None]
        feats, labels = [], []
        for label, folder in enumerate(sorted((pretrained / split).iterdir())):
            for path in sorted(folder.iterdir()):
                image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
                x = (torch.from_numpy(image).permute(2, 0, 1) / 255 - mean) / std
                feats.append(torch.nn.functional.normalize(x.flatten(), dim=0))
                labels.append(label)
        return torch.stack(feats), torch.tensor(labels)

    train_x, train_y = pixels("train")
    val_x, val_y = pixels("val")
    sims, top = (val_x @ train_x.T).topk(3, dim=1)
    assert result["top1"]["1"] == pytest.approx(float((train_y[top[:, 0]] == val_y).float().mean()))
    # Weighted 3-NN: each neighbour votes exp(similarity / 0.07) for its class.
    votes = torch.zeros(len(val_y), 3).scatter_add_(1, train_y[top], (sims / 0.07).exp())
    assert result["top1"]["3"] == pytest.approx(float((votes.argmax(1) == val_y).float().mean()))
    assert Path(pretrained / "run" / "eval" / "knn_raw_pixels.json").is_file()
