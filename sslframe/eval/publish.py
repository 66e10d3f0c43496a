"""Sharing a trained trunk: ``sslframe export RUN_DIR --format hf|timm|torchvision|onnx --out DIR``.

``hf`` writes a Hugging Face style folder: ``model.safetensors`` (timm's names), ``config.json``
(timm's architecture and arguments) and ``README.md``, a model card generated from the run (method
and its paper, trunk, data, epochs and batch, the evaluation results in ``RUN_DIR/eval/``, the
exact config, the licence field). It loads with ``timm.create_model(architecture, pretrained=True,
pretrained_cfg_overlay=dict(file=".../model.safetensors"), num_classes=0, **model_args)``, and the
export checks that the timm model computes the trunk's features before writing anything.
``timm`` and ``torchvision`` write the state dict alone under those names; ``onnx`` exports the
trunk with a dynamic batch and checks its outputs against PyTorch with onnxruntime.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from sslframe.errors import UserError
from sslframe.eval.features import load_trunk
from sslframe.eval.interchange import export_trunk, save_state_file
from sslframe.models.trunks import Trunk
from sslframe.models.trunks.regnet import RegNet
from sslframe.models.trunks.resnet import ResNet
from sslframe.models.trunks.vit import VisionTransformer

FORMATS = ("hf", "timm", "torchvision", "onnx")
# Methods' papers, for the model card.
PAPERS = {
    "simclr": "Chen et al. 2020, A Simple Framework for Contrastive Learning of Visual Representations",
    "mocov2": "Chen et al. 2020, Improved Baselines with Momentum Contrastive Learning",
    "mocov3": "Chen, Xie, He 2021, An Empirical Study of Training Self-Supervised Vision Transformers",
    "swav": "Caron et al. 2020, Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
    "deepclusterv2": "Caron et al. 2020 (SwAV paper, appendix)",
    "dino": "Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers",
    "byol": "Grill et al. 2020, Bootstrap Your Own Latent",
    "simsiam": "Chen & He 2021, Exploring Simple Siamese Representation Learning",
    "barlowtwins": "Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
    "vicreg": "Bardes, Ponce, LeCun 2022, VICReg: Variance-Invariance-Covariance Regularization",
    "mae": "He et al. 2022, Masked Autoencoders Are Scalable Vision Learners",
    "ijepa": "Assran et al. 2023, Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
}


def timm_architecture(trunk: Trunk, cfg: Any) -> tuple[str, dict[str, Any]]:
    """The timm model (name and arguments) that computes this trunk's features with its weights
    under timm's names; a trunk timm has no model for is a clear error."""
    t = cfg.trunk
    if isinstance(trunk, ResNet):
        if t.width_multiplier != 1 or t.small_images or t.max_pool is False or t.norm != "batch":
            raise UserError(
                "timm has no model for this ResNet (a width multiplier, the small-image stem or group norm); "
                "use --format onnx or --format torchvision"
            )
        return t.arch, {}
    if isinstance(trunk, RegNet):
        if t.small_images:
            raise UserError("timm has no model for a RegNet with the small-image stem; use --format onnx")
        match = re.fullmatch(r"regnet_([xy])_(\d+)(?:_(\d+))?(mf|gf)", t.arch)
        if match is None:
            raise UserError(f"no timm name for RegNet '{t.arch}'; use --format onnx")
        kind, whole, part, unit = match.groups()
        flops = float(f"{whole}.{part}" if part else whole) * (1 if unit == "gf" else 0.001)
        return f"regnet{kind}_{round(flops * 10):03d}", {}
    if isinstance(trunk, VisionTransformer):
        args = {
            "img_size": trunk.grid * trunk.patch_size,
            "patch_size": trunk.patch_size,
            "embed_dim": trunk.embed_dim,
            "depth": len(trunk.blocks()),
            "num_heads": trunk.num_heads,
            "class_token": trunk.cls_token is not None,
            "no_embed_class": True,
            "global_pool": "avg" if trunk.pool == "mean" else "token",
            "fc_norm": False,
        }
        return "vit_tiny_patch16_224", args  # every size comes from the arguments
    raise UserError(f"no timm model for a {type(trunk).__name__} trunk; use --format onnx")


def _timm_model(name: str, args: dict[str, Any], weights: Path | None = None) -> torch.nn.Module:
    import timm

    overlay = {"file": str(weights)} if weights is not None else None
    model = timm.create_model(
        name, pretrained=weights is not None, pretrained_cfg_overlay=overlay, num_classes=0, **args
    )
    return model.eval()


def _check_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> float:
    error = float((ours - theirs).abs().max())
    scale = float(ours.abs().max()) or 1.0
    if error > 1e-4 * max(scale, 1.0):
        raise UserError(
            f"{what} does not compute the trunk's features (largest difference {error:.3g}); nothing written"
        )
    return error


def _probe(trunk: Trunk, cfg: Any) -> torch.Tensor:
    size = int(cfg.transform.global_size)
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))


def eval_results(run_dir: Path) -> list[tuple[str, str, float]]:
    """(task, metric, value) of every evaluation in ``run_dir/eval/*.json`` (top-1 per k, etc.)."""
    rows = []
    for path in sorted((run_dir / "eval").glob("*.json")):
        result = json.loads(path.read_text())
        for key in ("top1", "top5"):
            value = result.get(key)
            if isinstance(value, dict):
                rows += [(path.stem, f"{key} (k={k})", float(v)) for k, v in value.items()]
            elif isinstance(value, (int, float)):
                rows.append((path.stem, key, float(value)))
    return rows


def model_card(
    run_dir: Path, cfg: Any, name: str, args: dict[str, Any], license_id: str, encoder: str = "student"
) -> str:
    method = cfg.method.name
    results = eval_results(run_dir)
    table = ["| evaluation | metric | value |", "|---|---|---|"] + [f"| {t} | {m} | {v:.4f} |" for t, m, v in results]
    overlay = 'pretrained_cfg_overlay=dict(file="model.safetensors")'
    load = f'timm.create_model("{name}", pretrained=True, {overlay}, num_classes=0'
    load += "".join(f", {k}={v!r}" for k, v in args.items()) + ")"
    return "\n".join(
        [
            "---",
            f"license: {license_id}",
            "library_name: timm",
            f"tags: [self-supervised, sslframe, {method}]",
            "---",
            "",
            f"# {run_dir.name}: {method} ({cfg.trunk.name} {cfg.trunk.get('arch', '')})",
            "",
            f"A trunk pretrained without labels by sslframe with {method} ({PAPERS.get(method, 'see sslframe')}).",
            "",
            f"- Trunk: `{OmegaConf.to_yaml(cfg.trunk).strip().replace(chr(10), ', ')}`",
            f"- Data: `{cfg.data.name}` at `{cfg.data.path}` ({cfg.transform.global_crops} global views of "
            f"{cfg.transform.global_size} px, {cfg.transform.local_crops} local views)",
            f"- Training: {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size} per process, {cfg.optim.name} "
            f"at lr {cfg.optim.lr} (per {cfg.optim.base_batch_size} images), precision {cfg.trainer.precision}",
            "- Weights: "
            + (
                "the method's teacher, its momentum (EMA) copy of the trunk (evaluations of it: the `_teacher` rows)"
                if encoder == "teacher"
                else "the trunk trained by the gradient (the student, where the method also keeps a teacher)"
            ),
            "",
            "## Evaluation",
            "",
            *(table if results else ["No evaluation in the run's eval/ folder (run `sslframe eval knn ...` first)."]),
            "",
            "## Use",
            "",
            "```python",
            "import timm",
            "",
            f"model = {load}",
            "features = model(images)  # images normalised as in the config below",
            "```",
            "",
            "## Training config",
            "",
            "```yaml",
            OmegaConf.to_yaml(cfg).strip(),
            "```",
            "",
        ]
    )


def export_run(
    run_dir: str | Path, fmt: str, out: Path, license_id: str = "other", encoder: str = "student"
) -> list[Path]:
    """Write ``run_dir``'s trunk in format ``fmt`` into the folder ``out``; returns what was written.
    ``encoder="teacher"``: the method's momentum copy of the trunk (what DINO's authors publish)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; valid choices: {', '.join(FORMATS)}")
    trunk, cfg, folder = load_trunk(run_dir, encoder=encoder)
    run = folder.parent.parent if folder.parent.name == "checkpoints" else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = _probe(trunk, cfg)
    with torch.no_grad():
        expected = trunk(x)
    if fmt in ("timm", "torchvision"):
        return [save_state_file(export_trunk(trunk, fmt), out / "model.safetensors")]
    if fmt == "onnx":
        return [export_onnx(trunk, x, expected, out / "trunk.onnx")]
    name, args = timm_architecture(trunk, cfg)
    weights = save_state_file(export_trunk(trunk, "timm"), out / "model.safetensors")
    with torch.no_grad():
        _check_close(expected, _timm_model(name, args, weights)(x), f"timm's {name}")
    config = {"architecture": name, "model_args": args, "num_classes": 0, "num_features": int(expected.shape[1])}
    config["pretrained_cfg"] = {"mean": list(cfg.transform.mean), "std": list(cfg.transform.std)}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "README.md").write_text(model_card(run, cfg, name, args, license_id, encoder))
    return [weights, out / "config.json", out / "README.md"]


def export_onnx(trunk: Trunk, x: torch.Tensor, expected: torch.Tensor, path: Path) -> Path:
    """The trunk as ONNX (input ``images``, output ``features``, any batch size), checked with
    onnxruntime on a batch of another size than the one it was traced with."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--format onnx needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    torch.onnx.export(
        trunk.eval(), (x[:2],), str(path), input_names=["images"], output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": x.numpy()})
    _check_close(expected, torch.from_numpy(output), "the ONNX export")
    return path
