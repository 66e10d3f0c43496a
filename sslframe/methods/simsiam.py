"""SimSiam: simple Siamese representation learning (Chen & He 2021)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sslframe.errors import UserError
from sslframe.losses.cosine import negative_cosine_similarity
from sslframe.methods.base import METHODS, Method, StepContext, StepOutput
from sslframe.models.heads import MLPHead, predictor
from sslframe.models.trunks import Trunk


@dataclass
class SimSiamConfig:
    """SimSiam (Chen & He 2021): predictor + stop-gradient, symmetric negative cosine."""

    name: str = "simsiam"
    predictor_hidden_dims: list[int] = field(default_factory=lambda: [512])
    # The predictor's learning rate stays at its peak (no warmup, no decay): the authors'
    # main_simsiam.py --fix-pred-lr, which their README's ImageNet runs pass (the paper, Table 1c:
    # a predictor whose rate is not decayed does slightly better).
    fix_predictor_lr: bool = True


@METHODS.register("simsiam", schema=SimSiamConfig)
class SimSiam(Method):
    """Trunk + projector (``head``, 3 layers with batch norm on its output) + predictor; the
    loss D(p1, sg(z2))/2 + D(p2, sg(z1))/2 (eq. 3). No momentum encoder: the stop-gradient
    and the predictor are what prevent collapse (sec. 4.1). Views are encoded one at a time."""

    def __init__(self, trunk: Trunk, head_cfg: Any, cfg: Any) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MLPHead.from_config(trunk.out_dim, head_cfg)
        self.predictor = predictor(self.head.output_dim, cfg.predictor_hidden_dims)
        self.fix_predictor_lr = cfg.fix_predictor_lr

    def constant_lr_prefixes(self) -> tuple[str, ...]:
        return ("predictor.",) if self.fix_predictor_lr else ()

    def training_step(self, crops: list[torch.Tensor], ctx: StepContext) -> StepOutput:
        if len(crops) < 2 or crops[0].shape != crops[1].shape:
            raise UserError("SimSiam needs two global views per image (transform.global_crops=2)")
        z1, z2 = (self.head(self.trunk(view)) for view in crops[:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (negative_cosine_similarity(p1, z2) + negative_cosine_similarity(p2, z1)) / 2
        return StepOutput(loss=loss, embeddings=F.normalize(z1.detach().float(), dim=1))
