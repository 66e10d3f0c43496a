"""Load a pretrained trunk from a checkpoint and extract pooled features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslframe.data.loader import EpochSampler, ViewsDataset, make_loader
from sslframe.data.sources import build_source
from sslframe.data.transforms import eval_transform
from sslframe.distributed import checkpoint as ckpt
from sslframe.errors import UserError
from sslframe.models.trunks import Trunk, build_trunk


def load_trunk(path: str | Path, random_init: bool = False) -> tuple[Trunk, Any, Path]:
    """The trunk of a checkpoint (or the same architecture freshly initialised) and its run config."""
    folder = ckpt.resolve_checkpoint(path)
    state, meta = ckpt.load_checkpoint(folder)
    run_cfg = OmegaConf.create(meta["config"])
    with torch.random.fork_rng(devices=[]):
        # The trainer seeds with trainer.seed and builds the trunk first, so the random-init
        # baseline is exactly the network the run started from.
        torch.manual_seed(int(run_cfg.trainer.seed))
        trunk = build_trunk(run_cfg.trunk)
    if not random_init:
        prefix = "trunk."
        weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
        missing, unexpected = trunk.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise UserError(
                f"checkpoint '{folder}' does not match its trunk: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    return trunk.eval(), run_cfg, folder


@torch.no_grad()
def extract_features(
    trunk: Trunk,
    data_cfg: Any,
    path: str,
    size: int,
    mean: Any,
    std: Any,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised global-average-pooled features and labels for every image under ``path``."""
    source = build_source(data_cfg, path)
    dataset = ViewsDataset(source, eval_transform(size, mean, std), seed=0)
    sampler = EpochSampler(len(source), seed=0, shuffle=False)
    loader = make_loader(dataset, sampler, batch_size, num_workers, drop_last=False)
    trunk = trunk.to(device, memory_format=torch.channels_last)
    feats, labels = [], []
    for batch in loader:
        if batch.size == 0:
            continue
        images = batch.views[0].to(device, memory_format=torch.channels_last)
        feats.append(F.normalize(trunk(images).float(), dim=1).cpu())
        labels.append(batch.labels)
    return torch.cat(feats), torch.cat(labels)
