"""Launchers that start tools/train.py: this machine (``launcher=local``) or SLURM through
submitit (``launcher=slurm``), one run or a sweep. Launchers are found by name here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from omegaconf import DictConfig

from sslframe.registry import Registry

Launcher = Callable[[DictConfig, Sequence[str]], int]

LAUNCHERS: Registry[Launcher] = Registry("launcher")


@LAUNCHERS.register("local")
def _local(cfg: DictConfig, overrides: Sequence[str]) -> int:
    from launch.local import run_local

    return run_local(cfg, overrides)


@LAUNCHERS.register("slurm")
def _slurm(cfg: DictConfig, overrides: Sequence[str]) -> int:
    from launch.slurm import submit

    return submit(cfg, overrides)


def launch(cfg: DictConfig, overrides: Sequence[str]) -> int:
    """Run or submit one training run with the launcher its config names."""
    return LAUNCHERS.get(cfg.launcher.name)(cfg, overrides)
