"""Defaults that are fast where they are safe: precision=auto and channels-last per trunk."""

from __future__ import annotations

import pytest
import torch

from sslframe.config import compose_config
from sslframe.distributed import device as hardware
from sslframe.distributed.device import resolve_precision
from sslframe.models.trunks import build_trunk


@pytest.mark.parametrize(
    ("flags", "expected"),
    [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), (set(), "fp32")],
)
def test_auto_precision_is_bf16_only_where_the_cpu_runs_it_natively(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], expected: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    # An explicit choice is never changed.
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, torch.device("cpu")) == explicit


@pytest.mark.parametrize("experiment", ["swav_resnet50", "simclr_resnet50", "swav_regnet", "dino_vit_small"])
def test_default_precision_is_auto(experiment: str) -> None:
    # The quickstart demos pin fp32 so that they print the README's figures on every CPU.
    assert compose_config("train", [f"config={experiment}"]).trainer.precision == "auto"
    assert compose_config("train", ["config=quickstart"]).trainer.precision == "fp32"


def test_channels_last_only_where_the_trunk_is_faster_with_it() -> None:
    # bench/throughput.py on CPU: ResNets gain 1.2x from channels-last, RegNets lose 2.3x.
    with torch.device("meta"):
        regnet = build_trunk(compose_config("train", ["config=swav_regnet"]).trunk)
        resnet = build_trunk(compose_config("train", ["config=swav_resnet50"]).trunk)
    assert "cpu" not in regnet.channels_last_devices and "cuda" in regnet.channels_last_devices
    assert {"cpu", "cuda"} <= set(resnet.channels_last_devices)
