"""The Python API, for notebooks and scripts: compose a validated config, train, load a trunk.

    import sslframe

    cfg = sslframe.compose("fmnist_simclr", ["trainer.max_epochs=1"])
    run_dir = sslframe.train("fmnist_simclr", ["trainer.max_epochs=1", "run.dir=runs/try"])
    trunk = sslframe.load_trunk(run_dir)  # a plain nn.Module in eval mode: features = trunk(images)

The same configs, overrides and checks as ``tools/train.py`` (and ``sslframe train``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from sslframe.errors import UserError


def compose(config: str = "quickstart", overrides: Sequence[str] = (), primary: str = "train") -> DictConfig:
    """The composed, validated config of the ready experiment ``config`` (``configs/config/``)
    with ``overrides`` (``key=value`` strings, as on the command line); ``primary`` is ``train``,
    ``eval`` or ``plan``. Bad keys, types and choices raise ``UserError`` naming them."""
    from sslframe.config import compose_config

    args = [f"config={config}"] if primary in ("train", "plan") else []
    return compose_config(primary, [*args, *overrides])


def train(config: str = "quickstart", overrides: Sequence[str] = ()) -> Path:
    """Train (or resume: ``trainer.resume=auto`` by default) in this process and return the run
    directory; ``launcher.procs=N`` starts N processes on this machine and ``launcher=slurm``
    submits a job, as the command line does (the run directory is returned once the launcher
    returns)."""
    from launch import launch

    cfg = compose(config, overrides)
    code = launch(cfg, [f"config={config}", *overrides])
    if code != 0:
        raise UserError(f"training stopped with exit status {code}; see {cfg.run.dir}")
    return Path(cfg.run.dir)


def load_trunk(
    path: str | Path, layout: str = "", arch: str = "", random_init: bool = False, encoder: str = "student"
) -> nn.Module:
    """The trunk of a run directory or checkpoint folder, as a plain ``nn.Module`` in eval mode
    (``trunk(images)`` gives the pooled features); or of a weights file written by ``sslframe
    export`` or another project, with its ``layout`` (torchvision, timm, swav, dino, vissl,
    sslframe) and ``arch`` (resnet50, regnet_y_400mf...). ``encoder="teacher"``: a run's momentum
    (EMA) copy of the trunk instead (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA; ``eval.encoder``)."""
    from sslframe.eval.features import load_trunk as load_run_trunk
    from sslframe.eval.interchange import load_trunk_weights, trunk_for_arch

    path = Path(path)
    if path.is_file() and path.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        if not layout or not arch:
            raise UserError(
                f"'{path}' is a weights file: say its layout= and arch= (e.g. layout='timm', arch='resnet50')"
            )
        if encoder != "student":
            raise UserError(f"encoder='{encoder}' picks the weights of a run's checkpoint, not of a weights file")
        trunk = trunk_for_arch(arch)
        if not random_init:
            report = load_trunk_weights(trunk, path, layout)
            if not report.ok:
                raise UserError(f"'{path}' does not fit {arch} as {layout}: {report.summary()}")
        return trunk.eval()
    trunk, _, _ = load_run_trunk(path, random_init=random_init, encoder=encoder)
    return trunk.eval()
