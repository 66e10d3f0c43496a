"""Export to and import from torchvision, timm, SwAV, DINO and VISSL layouts: outputs must match."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from sslframe.errors import UserError
from sslframe.eval.interchange import (
    export_trunk,
    import_state,
    load_trunk_weights,
    read_state_file,
    save_state_file,
)
from sslframe.models.trunks.regnet import RegNet
from sslframe.models.trunks.resnet import ResNet
from sslframe.models.trunks.vit import VisionTransformer


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine terms, so a mismatched key cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _resnet(arch: str, seed: int) -> ResNet:
    torch.manual_seed(seed)
    trunk = ResNet(arch)
    _randomise_norms(trunk, seed)
    return trunk.eval()


@pytest.fixture(scope="module")
def resnet18() -> ResNet:
    return _resnet("resnet18", 1)


@pytest.fixture(scope="module")
def regnet() -> RegNet:
    torch.manual_seed(2)
    trunk = RegNet("regnet_y_400mf")
    _randomise_norms(trunk, 2)
    return trunk.eval()


def _features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], classifier: tuple[str, ...]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(classifier)


def test_resnet_exports_to_torchvision_and_timm(resnet18, images, tmp_path: Path) -> None:
    resnet50 = _resnet("resnet50", 5)
    path = save_state_file(export_trunk(resnet50, "torchvision"), tmp_path / "trunk.safetensors")
    tv = torchvision.models.resnet50()
    _load_into(tv, read_state_file(path), ("fc.weight", "fc.bias"))
    tv.fc = torch.nn.Identity()
    assert torch.equal(_features(tv, images), _features(resnet50, images))
    path = save_state_file(export_trunk(resnet18, "timm"), tmp_path / "trunk.pt")
    tm = timm.create_model("resnet18", pretrained=False, num_classes=0)
    _load_into(tm, torch.load(path, weights_only=True), ())
    torch.testing.assert_close(_features(tm, images), _features(resnet18, images), rtol=0, atol=1e-5)


def test_regnet_exports_to_torchvision_and_timm(regnet, images) -> None:
    tv = torchvision.models.regnet_y_400mf()
    _load_into(tv, export_trunk(regnet, "torchvision"), ("fc.weight", "fc.bias"))
    tv.fc = torch.nn.Identity()
    ours = _features(regnet, images)
    torch.testing.assert_close(_features(tv, images), ours, rtol=0, atol=1e-5)
    tm = timm.create_model("regnety_004", pretrained=False, num_classes=0)
    _load_into(tm, export_trunk(regnet, "timm"), ())
    torch.testing.assert_close(_features(tm, images), ours, rtol=0, atol=1e-5)


def test_import_from_torchvision_gives_identical_outputs(images, tmp_path: Path) -> None:
    torch.manual_seed(3)
    tv = torchvision.models.resnet18()
    _randomise_norms(tv, 3)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    ours = ResNet("resnet18")
    report = load_trunk_weights(ours, tmp_path / "tv.pth", "torchvision")
    assert report.ok and report.ignored == ["fc.weight", "fc.bias"]
    tv.fc = torch.nn.Identity()
    assert torch.equal(_features(ours, images), _features(tv, images))

    tv_regnet = torchvision.models.regnet_y_400mf()
    _randomise_norms(tv_regnet, 4)
    ours_regnet = RegNet("regnet_y_400mf")
    state, report = import_state(ours_regnet, tv_regnet.state_dict(), "torchvision")
    assert report.ok
    ours_regnet.load_state_dict(state)
    tv_regnet.fc = torch.nn.Identity()
    torch.testing.assert_close(_features(ours_regnet, images), _features(tv_regnet, images), rtol=0, atol=1e-5)


def _swav_layout(trunk: ResNet) -> dict[str, torch.Tensor]:
    """main_swav.py saves a DDP model: "module." + torchvision names, plus its heads."""
    state = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    state["module.projection_head.0.weight"] = torch.zeros(8, trunk.out_dim)
    state["module.prototypes.weight"] = torch.zeros(16, 8)
    return {"epoch": 800, "state_dict": state}


def _dino_layout(trunk: ResNet) -> dict[str, object]:
    """main_dino.py: teacher/student MultiCropWrapper (backbone + head) state dicts, DDP prefixes."""
    teacher = {f"module.backbone.{k}": v for k, v in trunk.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(8, trunk.out_dim)
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    return {"teacher": teacher, "student": student, "epoch": 100, "args": argparse.Namespace(arch="resnet18")}


def _vissl_regnet_layout(trunk: RegNet) -> dict[str, object]:
    """VISSL/SEER: classy_state_dict.base_model.model.trunk holds ClassyVision's RegNet under
    _feature_blocks (stem "conv1", stage i "res{i+1}", blocks "block{i}-{j}", f.a/f.b/f.c)."""
    rename = {
        "conv1.conv": "f.a.0",
        "conv1.bn": "f.a.1",
        "conv2.conv": "f.b.0",
        "conv2.bn": "f.b.1",
        "se.fc1": "f.se.excitation.0",
        "se.fc2": "f.se.excitation.2",
        "conv3.conv": "f.c",
        "conv3.bn": "f.final_bn",
        "downsample.conv": "proj",
        "downsample.bn": "bn",
    }
    out = {}
    for key, value in trunk.state_dict().items():
        parts = key.split(".")
        if parts[0] == "stem":
            name = "_feature_blocks.conv1.stem." + {"conv": "0", "bn": "1"}[parts[1]] + "." + parts[2]
        else:
            stage, block = int(parts[0][1:]), int(parts[1][1:])
            module = rename[".".join(parts[2:4])]
            name = f"_feature_blocks.res{stage + 1}.block{stage}-{block - 1}.{module}.{parts[4]}"
        out[name] = value
    heads = {"0.clf.0.weight": torch.zeros(4, trunk.out_dim)}
    return {"classy_state_dict": {"base_model": {"model": {"trunk": out, "heads": heads}}}}


def test_published_layouts_import_without_missing_keys(resnet18, regnet, images, tmp_path: Path) -> None:
    expected = _features(resnet18, images)
    # DINO's file also pickles its argparse.Namespace of arguments: allowed, nothing else is.
    torch.save(_dino_layout(resnet18), tmp_path / "dino.pth")
    fresh = ResNet("resnet18")
    report = load_trunk_weights(fresh, tmp_path / "dino.pth", "dino")
    assert report.ok and report.ignored == ["module.head.mlp.0.weight"]
    assert torch.equal(_features(fresh, images), expected)
    state, report = import_state(fresh, _swav_layout(resnet18), "swav")
    assert report.ok and sorted(report.ignored) == ["module.projection_head.0.weight", "module.prototypes.weight"]
    fresh.load_state_dict(state)
    assert torch.equal(_features(fresh, images), expected)
    fresh_regnet = RegNet("regnet_y_400mf")
    state, report = import_state(fresh_regnet, _vissl_regnet_layout(regnet), "vissl")
    assert report.ok
    fresh_regnet.load_state_dict(state)
    assert torch.equal(_features(fresh_regnet, images), _features(regnet, images))


def test_strict_load_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    trunk = ResNet("resnet18", width_multiplier=0.125)
    state = dict(trunk.state_dict())
    state.pop("layer4.1.bn2.weight")
    state["layer9.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match=r"missing 1 \[layer4.1.bn2.weight\], unexpected 1 \[layer9.weight\]"):
        load_trunk_weights(trunk, tmp_path / "w.safetensors", "torchvision")
    report = load_trunk_weights(trunk, tmp_path / "w.safetensors", "torchvision", strict=False)
    assert report.missing == ["layer4.1.bn2.weight"] and report.unexpected == ["layer9.weight"]


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickled code ran",))


def test_crafted_pickle_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": _Payload()}, protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        load_trunk_weights(ResNet("resnet18"), path, "torchvision")
    assert "pickled code ran" not in capsys.readouterr().out


def _tiny_vit(pos_embed: str) -> VisionTransformer:
    torch.manual_seed(6)
    kwargs = {"patch_size": 8, "image_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}
    return VisionTransformer("vit_tiny", pos_embed=pos_embed, **kwargs).eval()


def _timm_vit(no_embed_class: bool) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=0,
        global_pool="token",
        no_embed_class=no_embed_class,
    ).eval()


@pytest.mark.parametrize("pos_embed", ["learned", "sincos"])
def test_vit_exports_to_timm(pos_embed: str, images) -> None:
    ours = _tiny_vit(pos_embed)
    tm = _timm_vit(no_embed_class=True)
    tm.load_state_dict(export_trunk(ours, "timm"), strict=True)
    torch.testing.assert_close(_features(tm, images), _features(ours, images), rtol=0, atol=1e-5)
    back = VisionTransformer(
        "vit_tiny", pos_embed=pos_embed, patch_size=8, image_size=32, embed_dim=32, depth=2, num_heads=2
    ).eval()
    state, report = import_state(back, tm.state_dict(), "timm")
    assert report.ok
    back.load_state_dict(state)
    assert torch.equal(_features(back, images), _features(ours, images))


def test_vit_with_registers_and_layer_scale_exports_to_timm(images) -> None:
    """Registers (Darcet et al. 2024) and LayerScale under timm's names (``reg_token``,
    ``blocks.N.ls1.gamma``): timm's ViT built with the same options gives the same features."""
    torch.manual_seed(8)
    kwargs = {"patch_size": 8, "image_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2}
    ours = VisionTransformer(
        "vit_tiny", pos_embed="learned", num_registers=2, layer_scale_init=0.5, mask_token=True, **kwargs
    )
    for block in ours.blocks_list:  # away from the initial value, so the scales are really carried over
        torch.nn.init.uniform_(block.ls1.gamma, 0.2, 1.0)
    ours.eval()
    tm = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0, global_pool="token", no_embed_class=True,
        reg_tokens=2, init_values=0.5, **{k: v for k, v in kwargs.items() if k != "image_size"},
    ).eval()  # fmt: skip
    exported = export_trunk(ours, "timm")
    assert "mask_token" not in exported and exported["reg_token"].shape == (1, 2, 32)
    tm.load_state_dict(exported, strict=True)
    torch.testing.assert_close(_features(tm, images), _features(ours, images), rtol=0, atol=1e-5)


def test_vit_imports_dino_layout_with_a_class_position(images) -> None:
    torch.manual_seed(7)
    tm = _timm_vit(no_embed_class=False)  # DINO/timm: pos_embed covers the class token too
    torch.nn.init.normal_(tm.pos_embed, std=0.5)
    teacher = {f"backbone.{k}": v for k, v in tm.state_dict().items()}
    teacher["head.last_layer.weight_v"] = torch.zeros(4, 32)
    ours = _tiny_vit("learned")
    state, report = import_state(ours, {"teacher": teacher}, "dino")
    assert report.ok and report.ignored == ["head.last_layer.weight_v"]
    ours.load_state_dict(state)
    torch.testing.assert_close(_features(ours, images), _features(tm, images), rtol=0, atol=1e-5)
    _, into_fixed = import_state(_tiny_vit("sincos"), {"teacher": teacher}, "dino")
    assert into_fixed.unexpected == ["pos_embed (learned positions; set trunk.pos_embed=learned)"]


def _authors_sincos(dim: int, grid: int) -> torch.Tensor:
    """The MAE / I-JEPA authors' fixed positions, computed here from their description
    (models_mae.py, util/pos_embed.py): a meshgrid of (column, row) coordinates, the first half of
    the channels from the first grid (columns), each half [sin, cos] of position * 1 / 10000^(2i/d)."""
    import numpy as np

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))  # (w, h)
    emb = np.concatenate([one_axis(dim // 2, coords[0]), one_axis(dim // 2, coords[1])], axis=1)
    return torch.from_numpy(emb).float()[None]


def test_vit_names_the_authors_sincos_layout_and_loads_it_as_learned(images) -> None:
    tm = _timm_vit(no_embed_class=True)
    with torch.no_grad():
        tm.pos_embed.copy_(_authors_sincos(32, 4))
    state = tm.state_dict()
    ours_fixed = _tiny_vit("sincos")
    # The same values in another channel order: not ours, so loading them as ours would transpose
    # every position the network was trained with.
    assert not torch.allclose(state["pos_embed"], ours_fixed.position_embeddings(4, 4), atol=1e-3)
    _, into_fixed = import_state(ours_fixed, state, "timm")
    assert len(into_fixed.unexpected) == 1 and "column code first" in into_fixed.unexpected[0]
    assert "trunk.pos_embed=learned" in into_fixed.unexpected[0]
    learned = _tiny_vit("learned")
    loaded, report = import_state(learned, state, "timm")
    assert report.ok
    learned.load_state_dict(loaded)
    torch.testing.assert_close(_features(learned, images), _features(tm.eval(), images), rtol=0, atol=1e-5)
