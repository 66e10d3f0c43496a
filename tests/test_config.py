"""Config composition and the promised one-line errors (issue: configs fail fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslframe.config import compose_config
from sslframe.config.loader import CONFIG_DIR, group_options
from sslframe.errors import UserError
from tests.helpers import run_tool

EXPERIMENTS = group_options("config")
NOPE_METHOD = "unknown option 'nope' for config group 'method'; valid choices: " + ", ".join(group_options("method"))


# Every experiment composing, validating and building: tests/test_all_configs.py.


def test_ready_experiments_exist() -> None:
    assert {"quickstart", "swav_resnet50", "swav_regnet", "simclr_resnet50"} <= set(EXPERIMENTS)


def test_override_reaches_the_config() -> None:
    cfg = compose_config("train", ["config=swav_regnet", "optim.lr=0.3", "trainer.max_epochs=2", "run.dir=runs/try1"])
    assert cfg.optim.lr == 0.3 and cfg.trainer.max_epochs == 2 and cfg.run.dir == "runs/try1"
    assert cfg.trunk.name == "regnet" and cfg.trunk.arch == "regnet_y_16gf"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=0.3"], "unknown key 'optim.lrr'; valid keys: name, lr,"),
        (["+method.foo=1"], "unknown key 'method.foo'; valid keys: name, temperature,"),
        (["optim.lr=fast"], "bad value for 'optim.lr'"),
        (["trainer.max_steps=1.5"], "bad value for 'trainer.max_steps'"),
        (["method=nope"], NOPE_METHOD),
        (["config=nope"], "unknown option 'nope' for config group 'config'; valid choices:"),
        (["trainer.precision=fp8"], "bad value for 'trainer.precision': 'fp8'; valid choices: auto, fp32, bf16, fp16"),
        (["trunk.arch=resnet7"], "bad value for 'trunk.arch': 'resnet7'; valid choices:"),
        (["optim.name=adam"], "bad value for 'optim.name': 'adam'; valid choices: adamw, lars, sgd"),
        (["data=folder"], "missing value for 'data.path'"),
        # Every step number is divided by it: 0 must fail here, not after the first step.
        (["trainer.checkpoint_every=0"], "trainer.checkpoint_every"),
        (
            ["transform.interpolation=cubic"],
            "bad value for 'transform.interpolation': 'cubic'; valid choices: bilinear, bicubic",
        ),
        (
            ["method=simclr", "method.view_batches=crop"],
            "bad value for 'method.view_batches': 'crop'; valid choices: together, per_view",
        ),
        (
            ["head.last_batch_norm_params=both"],
            "bad value for 'head.last_batch_norm_params': 'both'; valid choices: none, scale, scale_shift",
        ),
    ],
)
def test_user_errors_name_the_key_and_choices(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as info:
        compose_config("train", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_error_is_one_line_with_nonzero_exit(tmp_path: Path) -> None:
    result = run_tool("train.py", "optim.lrr=0.3", f"run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]] and result.stderr.startswith(
        "error: unknown key 'optim.lrr'"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "nothing may be written before the config is valid"


def test_cli_unknown_group_option() -> None:
    result = run_tool("train.py", "trunk=vgg")
    assert result.returncode == 2
    trunks = ", ".join(group_options("trunk"))
    expected = f"error: unknown option 'vgg' for config group 'trunk'; valid choices: {trunks}"
    assert result.stderr.strip() == expected


def test_timm_trunk_names_any_timm_model() -> None:
    cfg = compose_config("train", ["config=mocov3_resnet50", "trunk=timm", "trunk.name=resnet18"])
    assert cfg.trunk.family == "timm" and cfg.trunk.name == "resnet18"


def test_configs_never_name_python_objects() -> None:
    for path in CONFIG_DIR.rglob("*.yaml"):
        assert "_target_" not in path.read_text(), path


def test_swapping_a_group_leaves_out_what_the_new_option_lacks(caplog: pytest.LogCaptureFixture) -> None:
    # README's example: the quickstart experiment sets a ResNet's width_multiplier, which a
    # RegNet does not have; what both have (small_images) and the command line's keys are kept.
    with caplog.at_level("INFO", logger="sslframe.config.loader"):
        cfg = compose_config(
            "train", ["config=quickstart", "trunk=regnet", "trunk.arch=regnet_y_400mf", "trunk.small_images=true"]
        )
    assert dict(cfg.trunk) == {"name": "regnet", "arch": "regnet_y_400mf", "small_images": True}
    assert "trunk.width_multiplier (config/quickstart)" in caplog.text
    # Only the files this composition reads are rewritten and reported: not the other experiments
    # that set a trunk, but a recipe added on the command line and the recipes it includes.
    assert "fmnist_simclr" not in caplog.text and "recipe/" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="sslframe.config.loader"):
        cfg = compose_config(
            "train", ["config=quickstart", "+recipe=fmnist_resnet", "trunk=regnet", "trunk.arch=regnet_y_400mf"]
        )
    assert dict(cfg.trunk) == {"name": "regnet", "arch": "regnet_y_400mf", "small_images": True}
    assert "trunk.max_pool (recipe/fmnist_resnet)" in caplog.text
    # Another method: the experiment's SimCLR temperature goes, its head, optimizer and data stay.
    simclr = compose_config("train", ["config=fmnist_simclr"])
    byol = compose_config("train", ["config=fmnist_simclr", "method=byol"])
    assert byol.method.name == "byol" and "temperature" not in byol.method
    assert byol.head == simclr.head and byol.optim == simclr.optim and byol.data == simclr.data
    # A group whose options share one schema (data) keeps the experiment's values.
    folder = compose_config("train", ["config=fmnist_simclr", "data=folder", "data.path=x"])
    assert folder.data.batch_size == simclr.data.batch_size
    # Nothing of the config tree changes on disk.
    assert "width_multiplier" in (CONFIG_DIR / "config" / "quickstart.yaml").read_text()
