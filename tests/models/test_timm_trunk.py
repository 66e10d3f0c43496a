"""The timm adapter: any timm model, without pretrained weights, as a trunk exposing its blocks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sslframe.errors import UserError
from sslframe.models.trunks import build_trunk
from sslframe.models.trunks.timm_trunk import TimmTrunk, TimmTrunkConfig, repeated_units


def test_resnet18_exposes_its_stages() -> None:
    torch.manual_seed(0)
    trunk = build_trunk(OmegaConf.structured(TimmTrunkConfig(name="resnet18")))
    assert isinstance(trunk, TimmTrunk) and trunk.out_dim == 512
    # timm's ResNet keeps its stages as layer1..layer4.
    assert trunk.blocks() == [trunk.model.layer1, trunk.model.layer2, trunk.model.layer3, trunk.model.layer4]
    assert trunk(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_vit_tiny_exposes_its_transformer_blocks() -> None:
    # A config as read back from a checkpoint: a plain container naming the trunk family.
    cfg = OmegaConf.create({"family": "timm", "name": "vit_tiny_patch16_224"})
    trunk = build_trunk(cfg)
    assert trunk.out_dim == 192
    assert trunk.blocks() == list(trunk.model.blocks) and len(trunk.blocks()) == 12
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 224, 224)).shape == (1, 192)


def test_generic_block_search_falls_back_to_the_longest_container() -> None:
    model = torch.nn.Module()
    model.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    model.body = torch.nn.Sequential(*(torch.nn.Conv2d(4, 4, 3) for _ in range(3)))
    assert repeated_units(model) == list(model.body)


def test_unknown_timm_model_is_one_clear_line() -> None:
    with pytest.raises(UserError) as info:
        build_trunk(OmegaConf.structured(TimmTrunkConfig(name="resnet_does_not_exist")))
    message = str(info.value)
    assert "unknown timm model 'resnet_does_not_exist'" in message and "timm.list_models" in message
    assert "\n" not in message
