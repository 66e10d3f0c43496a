"""MoCo v2, BYOL, SimSiam and DINO end to end through the Trainer on a tiny image folder: their
experiment configs compose at the TINY sizes, two steps run, a checkpoint is written, and the
trainer drives the scheduled weight decay of the decayed parameter group."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from sslframe.methods.byol import BYOL
from sslframe.methods.dino import DINO
from sslframe.methods.mocov2 import MoCoV2
from sslframe.methods.simsiam import SimSiam
from tests.helpers import TINY, assert_resumes_exactly
from tests.methods.generated_views import one_thread

EXPERIMENTS = {
    "mocov2_resnet50": (MoCoV2, ["method.queue_length=32", "transform.local_crops=0"]),
    "byol_resnet50": (BYOL, ["method.predictor_hidden_dims=[32]", "transform.local_crops=0"]),
    "simsiam_resnet50": (
        SimSiam,
        ["head.hidden_dims=[32,32]", "method.predictor_hidden_dims=[8]", "transform.local_crops=0"],
    ),
    "dino_resnet50": (DINO, ["head.hidden_dims=[32,32]", "method.out_dim=32"]),
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_two_steps_through_the_trainer(experiment: str, image_folder: Path, tmp_path: Path) -> None:
    method_cls, overrides = EXPERIMENTS[experiment]
    cfg = compose_config(
        "train",
        [
            f"config={experiment}",
            *TINY,
            *overrides,
            "data=folder",
            f"data.path={image_folder}",
            f"run.dir={tmp_path / 'run'}",
            "trainer.max_epochs=1",
            "trainer.max_steps=2",
            "schedule.final_weight_decay=0.4",
        ],
    )
    trainer = Trainer(cfg)
    assert isinstance(trainer.method, method_cls)
    result = trainer.fit()
    assert result.final_step == 2 and math.isfinite(result.final_loss)
    assert result.checkpoint is not None and result.checkpoint.exists()
    # 32 images in batches of 8: 4 steps per epoch; after step 2 of 4 the cosine from
    # optim.weight_decay to 0.4 stands at k = 1 of K - 1 = 3.
    base = cfg.optim.weight_decay
    expected = 0.4 + (base - 0.4) * (1 + math.cos(math.pi / 3)) / 2
    decayed = [g for g in trainer.optimizer.param_groups if g["decayed"]]
    assert decayed and all(g["weight_decay"] == pytest.approx(expected) for g in decayed)
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizer.param_groups if not g["decayed"])


def test_dino_resumes_exactly_with_its_centre_teacher_and_weight_decay(image_folder: Path, tmp_path: Path) -> None:
    # Stopped after 2 of 4 steps and resumed: the same losses as the uninterrupted run (the
    # centre and the teacher come back from the checkpoint, the weight decay from the step).
    overrides = ["config=dino_resnet50", *TINY, *EXPERIMENTS["dino_resnet50"][1], "data=folder"]
    overrides += [f"data.path={image_folder}", "trainer.max_epochs=1", "optim=adamw", "optim.weight_decay=0.04"]
    assert_resumes_exactly([*overrides, "schedule.final_weight_decay=0.4"], tmp_path)
