"""Every ready experiment under configs/config/ composes, validates and builds a model whose
networks fit together, whoever added it (the test walks whatever files exist).

Models are built on the meta device: shapes without memory or arithmetic, so even the 10B
SEER model costs only the Python of its construction. One training step on meta crops of the
experiment's sizes, with every trunk's pooled forward standing in as an empty tensor of its
``out_dim`` (the trunks' own output shapes are tested under tests/models; batch norm on meta
tensors runs a slow Python decomposition), checks that every head, predictor and prototype set
fits its input.
"""

from __future__ import annotations

import pytest
import torch

from sslframe.config import compose_config
from sslframe.config.loader import group_options
from sslframe.methods import METHODS, Method, StepContext, build_method
from sslframe.models.trunks import Trunk

EXPERIMENTS = group_options("config")
# A large dataset size for methods that size state by it (DeepCluster-v2's memory bank).
NUM_SAMPLES = 100_000
# Methods whose training step reads tensor values on the host (DeepCluster-v2 decides when to
# cluster from a buffer), which meta tensors do not have: their trunk and head are checked.
HOST_READS = {"deepclusterv2"}


def meta_crops(cfg: object, batch: int = 2) -> list[torch.Tensor]:
    t = cfg.transform  # type: ignore[attr-defined]
    sizes = [t.global_size] * t.global_crops + [t.local_size] * t.local_crops
    return [torch.empty(batch, 3, s, s, device="meta") for s in sizes]


def stand_in_trunks(method: Method) -> None:
    """Every trunk's pooled forward returns an empty tensor of its ``out_dim``."""
    for module in method.modules():
        if isinstance(module, Trunk):
            module.forward = lambda x, dim=module.out_dim: x.new_empty(x.shape[0], dim)  # type: ignore[method-assign]


def test_the_walk_sees_the_ready_experiments() -> None:
    assert {"quickstart", "swav_resnet50", "barlowtwins_resnet50", "vicreg_resnet50"} <= set(EXPERIMENTS)
    assert "deepclusterv2_resnet50" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_validates_and_builds(name: str) -> None:
    cfg = compose_config("train", [f"config={name}", "data.path=unused"])
    assert cfg.method.name in METHODS, f"{name} names an unregistered method"
    assert cfg.run.dir
    with torch.device("meta"):
        method = build_method(cfg)
    method.bind_dataset(NUM_SAMPLES, 0, 1)
    # Batch norm split into groups (MoCo v2's single-process shuffle-BN) needs two samples per group.
    crops = meta_crops(cfg, batch=2 * max(1, int(cfg.method.get("bn_splits", 1))))
    batch = crops[0].shape[0]
    stand_in_trunks(method)
    if cfg.method.name in HOST_READS:
        features = method.trunk(crops[0])
        assert method.head(features).shape == (batch, cfg.head.output_dim)
        return
    ctx = StepContext(0, 0, 10, 10, torch.arange(batch, device="meta"))
    out = method.training_step(crops, ctx)
    assert out.loss.shape == ()
    if out.embeddings is not None:
        assert out.embeddings.shape[0] == batch
