"""Adding a method is one place: a class and its config schema registered together, plus a YAML
file. A method defined here, outside the package, is validated, composed and trained like the
built-in ones (README, "Add a method")."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sslframe import registry
from sslframe.config import loader
from sslframe.errors import UserError
from sslframe.methods import METHODS, Method, StepContext, StepOutput
from sslframe.models.heads import MLPHead
from sslframe.models.multicrop import multicrop_forward
from tests.helpers import ROOT, TINY


@dataclass
class CosineAgreementConfig:
    """The schema: every key the method accepts, with its type and default."""

    name: str = "cosine_agreement"
    # How strongly the two views' projections are pulled together.
    weight: float = 1.0


class CosineAgreement(Method):
    """Pulls the two views' normalised projections together (a toy objective, for this test)."""

    def __init__(self, trunk: Any, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.weight = cfg.weight

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        batch = crops[0].shape[0]
        z = F.normalize(self.head(multicrop_forward(self.trunk, crops[:2])), dim=1)
        loss = self.weight * (2 - 2 * (z[:batch] * z[batch:]).sum(dim=1).mean())
        return StepOutput(loss=loss, embeddings=z[:batch].detach())


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The method registered (class and schema in one call) and its YAML in a copy of configs/."""
    METHODS.register("cosine_agreement", schema=CosineAgreementConfig)(CosineAgreement)
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "method" / "cosine_agreement.yaml").write_text(
        "defaults:\n  - /schema/method/cosine_agreement@_here_\n  - _self_\nweight: 0.5\n"
    )
    (configs / "config" / "cosine_agreement_tiny.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /method: cosine_agreement\n  - override /optim: sgd\n"
    )
    monkeypatch.setattr(loader, "CONFIG_DIR", configs)
    try:
        yield configs
    finally:
        # Registries are process-wide: leave them as the other tests expect them.
        del METHODS._entries["cosine_agreement"]
        del registry._GROUP_SCHEMAS["method"]["cosine_agreement"]


def test_a_method_registered_outside_the_package_validates_and_trains(
    registered: Path, image_folder: Path, tmp_path: Path
) -> None:
    from sslframe.engine.trainer import Trainer

    base = [
        "config=cosine_agreement_tiny",
        *TINY,
        "data=folder",
        f"data.path={image_folder}",
        f"run.dir={tmp_path / 'run'}",
    ]
    cfg = loader.compose_config("train", [*base, "trainer.max_steps=3"])
    assert cfg.method.weight == 0.5
    result = Trainer(cfg).fit()
    assert math.isfinite(result.final_loss) and result.final_step == 3
    with pytest.raises(UserError, match=r"unknown key 'method.wieght'; valid keys: name, weight"):
        loader.compose_config("train", [*base, "method.wieght=2"])
    with pytest.raises(UserError, match=r"valid choices: .*cosine_agreement"):
        loader.compose_config("train", [*base, "method=cosine_agreemen"])
