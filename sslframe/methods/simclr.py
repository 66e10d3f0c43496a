"""SimCLR: contrastive learning of visual representations (Chen et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from sslframe.losses.ntxent import nt_xent_loss
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.heads import MLPHead
from sslframe.models.multicrop import multicrop_forward, per_view_forward
from sslframe.models.trunks import Trunk
from sslframe.registry import Choices


@dataclass
class SimCLRConfig:
    """SimCLR (Chen et al. 2020): NT-Xent contrastive loss between two views."""

    name: str = "simclr"
    temperature: float = 0.1
    # together: both views through trunk and head in one batch, so batch norm takes its
    # statistics over both (the authors' tf2/model.py concatenates the views before the ResNet);
    # per_view: one call per view (lightly's SimCLR example), statistics per view.
    view_batches: str = "together"
    choices: ClassVar[Choices] = {"view_batches": ("together", "per_view")}


@METHODS.register("simclr", schema=SimCLRConfig)
class SimCLR(Method):
    """Trunk + projection head; NT-Xent between the two global views over the global batch."""

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.temperature = cfg.temperature
        self.view_batches = cfg.view_batches

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2:
            raise ValueError("SimCLR needs two views per image (transform.global_crops=2)")
        batch = crops[0].shape[0]
        if self.view_batches == "per_view":
            z = per_view_forward(lambda view: self.head(self.trunk(view)), crops[:2])
        else:
            z = self.head(multicrop_forward(self.trunk, crops[:2]))
        z1, z2 = z[:batch], z[batch:]
        loss = nt_xent_loss(z1, z2, self.temperature, self.group)
        return StepOutput(loss=loss, embeddings=F.normalize(z1.detach().float(), dim=1))
