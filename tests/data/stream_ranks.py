"""What one rank's loaders yield; a small module so that spawned test ranks import little."""

from __future__ import annotations

from omegaconf import OmegaConf

from sslframe.config.schema import DataConfig
from sslframe.data.build import build_train_data


def sequences(rank: int, world: int, sources: dict[str, str], workers: int) -> dict[str, tuple[list, list]]:
    """Per source: the indices of an uninterrupted epoch 1 and of a fresh loader set at batch 2."""
    out = {}
    for name, path in sources.items():
        cfg = OmegaConf.structured(DataConfig(source=name, path=path, batch_size=3, shuffle_buffer=4))
        cfg.num_workers = workers
        full = build_train_data(cfg, None, 13, rank, world)
        full.set_position(1, 0)
        whole = [b.indices.tolist() for b in full]
        resumed = build_train_data(cfg, None, 13, rank, world)
        resumed.set_position(1, 2)
        out[name] = (whole, [b.indices.tolist() for b in resumed])
    return out
