"""The steps the throughput benchmark times: our training step, built by the real ``Trainer``
from a config, and lightly's step (bench/peers.py) on an identical trunk, batch and precision.

Both sides get the same trunk class and the same initial weights (our ResNet/RegNet/ViT, built
from the same config with the same seed): our ResNet-18 is torchvision's architecture with
torchvision's parameter names, so the lightly side runs exactly the network lightly's examples
build from ``torchvision.models.resnet18()``, and any difference in speed comes from the method,
loss and step code and their defaults, not from the trunk. The same holds for RegNetY and ViT,
which lightly's examples do not cover.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench import peers
from sslframe.config import compose_config
from sslframe.engine.stop import StopRequest
from sslframe.engine.trainer import Trainer
from sslframe.methods import StepContext
from sslframe.models.trunks import build_trunk
from sslframe.planner.measure import flop_counter

# Trunk overrides and head sizes. ResNet-18: lightly's example heads (512-512-128, 512
# prototypes); ResNet-50 and the rest: the papers' 2048-wide hidden layer, 3000 prototypes.
TRUNKS: dict[str, tuple[list[str], int, int]] = {
    "resnet18": (["trunk=resnet", "trunk.arch=resnet18"], 512, 512),
    "resnet50": (["trunk=resnet", "trunk.arch=resnet50"], 2048, 3000),
    "regnety_400mf": (["trunk=regnet", "trunk.arch=regnet_y_400mf"], 2048, 3000),
    "vit_tiny": (["trunk=vit", "trunk.arch=vit_tiny", "trunk.patch_size=8"], 2048, 3000),
}
OUTPUT_DIM = 128
TEMPERATURE = 0.1
LR = 0.06

# Variant -> (precision, channels_last, compile) of our trainer.
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "eager": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "channels_last": ("fp32", True, False),
    "compile": ("fp32", False, True),
    "channels_last+compile": ("fp32", True, True),
    "bf16+channels_last": ("bf16", True, False),
    "bf16+channels_last+compile": ("bf16", True, True),
}


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration: method, trunk, images per step and crop sides."""

    method: str
    trunk: str
    batch: int
    crop_sizes: tuple[int, ...]

    @property
    def name(self) -> str:
        crops = "+".join(f"{self.crop_sizes.count(s)}x{s}" for s in sorted(set(self.crop_sizes), reverse=True))
        return f"{self.method}/{self.trunk}/b{self.batch}/{crops}"


def _image_folder(count: int) -> Path:
    """A throwaway folder of ``count`` tiny images: the trainer needs a data source to build,
    but the timed steps feed it synthetic crops."""
    root = Path(tempfile.mkdtemp(prefix="sslframe_bench_")) / "images"
    root.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(pixels).save(root / f"{i:05d}.png")
    return root


def config_overrides(case: Case, variant: str, device: str, data_path: Path) -> list[str]:
    trunk, hidden, prototypes = TRUNKS[case.trunk]
    precision, channels_last, compile_ = VARIANTS[variant]
    local = [s for s in case.crop_sizes if s != case.crop_sizes[0]]
    overrides = [
        f"config={case.method}_resnet50",
        *trunk,
        "data=folder",
        f"data.path={data_path}",
        f"data.batch_size={case.batch}",
        "data.num_workers=0",
        f"head.hidden_dims=[{hidden}]",
        f"head.output_dim={OUTPUT_DIM}",
        "optim=sgd",
        f"optim.lr={LR}",
        "optim.base_batch_size=0",
        f"method.temperature={TEMPERATURE}",
        f"trainer.precision={precision}",
        f"trainer.channels_last={str(channels_last).lower()}",
        f"trainer.compile={str(compile_).lower()}",
        f"trainer.device={device}",
        "trainer.progress=false",
        "distributed.strategy=none",
        f"transform.global_size={case.crop_sizes[0]}",
        f"transform.local_crops={len(local)}",
    ]
    if local:
        overrides.append(f"transform.local_size={local[0]}")
    if case.method == "swav":
        # lightly's prototypes are never frozen and it keeps no queue: the same computation.
        overrides += [
            f"method.num_prototypes=[{prototypes}]",
            "method.freeze_prototypes_steps=0",
            "method.queue_length=0",
        ]
    else:
        # lightly's SimCLR head ends in batch norm.
        overrides.append("head.last_batch_norm=true")
    if case.trunk.startswith("vit"):
        # Position embeddings for the global crop side; channels-last is for convolutions.
        overrides += [f"trunk.image_size={case.crop_sizes[0]}", "trainer.channels_last=false"]
    return overrides


def synthetic_crops(case: Case, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(case.batch, 3, s, s, generator=generator).to(device) for s in case.crop_sizes]


class Contenders:
    """Builds the step closures of one case (ours per variant, lightly per precision)."""

    def __init__(self, case: Case, device: torch.device, extra: list[str] | None = None) -> None:
        self.case = case
        self.device = device
        self.extra = list(extra or [])
        self.data_path = _image_folder(4 * case.batch)
        self.crops = synthetic_crops(case, device)

    def config(self, variant: str) -> Any:
        overrides = config_overrides(self.case, variant, self.device.type, self.data_path)
        return compose_config("train", overrides + self.extra)

    def trainer(self, variant: str) -> Trainer:
        return Trainer(self.config(variant))

    def ours(self, variant: str) -> Callable[[], torch.Tensor]:
        """Our step in one variant, on a trainer of its own."""
        return self.step_for(self.trainer(variant))

    def step_for(self, trainer: Trainer) -> Callable[[], torch.Tensor]:
        """Our step as the trainer runs it (``Trainer.train_step``): inputs in the trainer's memory
        format, forward under its autocast, backward, the per-step flags, optimizer and method
        updates."""
        trainer.model.train()
        signals = StopRequest()
        ctx = StepContext(0, 0, trainer.steps_per_epoch, trainer.total_steps)
        # What the flags check reads from a loader batch: its size and its unreadable samples.
        batch = SimpleNamespace(size=self.case.batch, bad=[])

        def step() -> torch.Tensor:
            views = [c.contiguous(memory_format=trainer.memory_format) for c in self.crops]
            out, _ = trainer.train_step(views, ctx, batch, signals)
            return out.loss.detach()

        return step

    def lightly(self, precision: str) -> Callable[[], torch.Tensor]:
        """lightly's step on the same trunk (same config, same seed), batch and precision."""
        cfg = self.config("eager")
        torch.manual_seed(cfg.trainer.seed)
        trunk = build_trunk(cfg.trunk)
        _, hidden, prototypes = TRUNKS[self.case.trunk]
        if self.case.method == "swav":
            model: torch.nn.Module = peers.LightlySwaV(trunk, trunk.out_dim, hidden, OUTPUT_DIM, prototypes)
            criterion = peers.swav_loss(TEMPERATURE, cfg.method.epsilon, cfg.method.sinkhorn_iterations)
        else:
            model = peers.LightlySimCLR(trunk, trunk.out_dim, hidden, OUTPUT_DIM)
            criterion = peers.simclr_loss(TEMPERATURE)
        model.to(self.device).train()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=LR, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
        )
        return peers.lightly_step(model, criterion, optimizer, self.crops, self._autocast(precision))

    def _autocast(self, precision: str) -> Callable[[], AbstractContextManager]:
        if precision == "fp32":
            return nullcontext
        return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)


def step_flops(step: Callable[[], torch.Tensor]) -> float:
    """Model FLOPs of one training step (forward and backward; 2 per multiply-add), counted by
    ``torch.utils.flop_counter`` with the planner's corrected convolution-backward formula."""
    with flop_counter() as counter:
        step()
    return float(counter.get_total_flops())
