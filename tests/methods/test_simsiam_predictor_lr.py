"""SimSiam's predictor learning rate through the trainer (the authors' --fix-pred-lr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslframe.config import compose_config
from sslframe.engine.trainer import Trainer
from tests.helpers import TINY, assert_resumes_exactly


@pytest.mark.parametrize("fixed", [True, False])
def test_predictor_rate_stays_at_the_peak_when_fixed(image_folder: Path, tmp_path: Path, fixed: bool) -> None:
    # main_simsiam.py (the authors' code): with --fix-pred-lr the predictor's group is set to the
    # initial rate (lr x batch / 256) at every step; the other groups follow the cosine.
    cfg = compose_config(
        "train",
        [
            "config=simsiam_resnet50",
            *TINY,
            "data=folder",
            f"data.path={image_folder}",
            f"run.dir={tmp_path}",
            "trainer.max_epochs=4",
            "trainer.max_steps=6",
            f"method.fix_predictor_lr={str(fixed).lower()}",
        ],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    peak = trainer.peak_lr
    assert peak == pytest.approx(0.05 * 8 / 256)
    predictor = {id(p) for p in trainer.method.predictor.parameters()}
    groups = [({id(p) for p in g["params"]}, g["lr"]) for g in trainer.optimizer.param_groups]
    predictor_rates = {lr for ids, lr in groups if ids & predictor}
    other_rates = {lr for ids, lr in groups if ids - predictor}
    assert other_rates and all(rate < 0.99 * peak for rate in other_rates)  # 6 of 16 steps into the cosine
    if fixed:
        assert all(ids <= predictor for ids, _ in groups if ids & predictor), "the predictor has its own group"
        assert sorted(predictor_rates) == pytest.approx([peak])
    else:
        assert predictor_rates == other_rates


def test_a_run_with_the_fixed_predictor_rate_resumes_exactly(image_folder: Path, tmp_path: Path) -> None:
    # The constant group's rate comes back with the optimizer's state; the others from the step.
    overrides = ["config=simsiam_resnet50", *TINY, "data=folder", f"data.path={image_folder}"]
    assert_resumes_exactly([*overrides, "trainer.max_epochs=1", "method.fix_predictor_lr=true"], tmp_path)
