"""Plain state dicts out of training checkpoints (for evaluation, sharing and other tools)."""

from __future__ import annotations

from pathlib import Path

import torch

from sslframe.config.schema.eval import ENCODERS
from sslframe.distributed import checkpoint as ckpt
from sslframe.errors import UserError


def trunk_weights(model: dict[str, torch.Tensor], encoder: str, folder: Path) -> dict[str, torch.Tensor]:
    """The trunk's weights in a checkpoint's model state: ``student`` the ``trunk.`` entries;
    ``teacher`` the one other top-level module with exactly the trunk's keys, the momentum copy
    that BYOL, MoCo, DINO, iBOT, DINOv2 and I-JEPA keep (found by its keys, whatever the method
    calls it: DINO's ``teacher_trunk``, I-JEPA's ``target_encoder``...)."""
    if encoder not in ENCODERS:
        raise UserError(f"unknown eval.encoder '{encoder}'; valid choices: {', '.join(ENCODERS)}")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in model.items():
        prefix, _, rest = key.partition(".")
        if rest:
            groups.setdefault(prefix, {})[rest] = value
    student = groups.get("trunk", {})
    if not student:
        raise UserError(f"checkpoint '{folder}' holds no trunk weights")
    if encoder == "student":
        return student
    copies = sorted(p for p, w in groups.items() if p != "trunk" and w.keys() == student.keys())
    if not copies:
        raise UserError(
            f"checkpoint '{folder}' keeps no teacher copy of its trunk: eval.encoder=teacher applies to "
            "methods with a momentum encoder (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA)"
        )
    if len(copies) > 1:
        raise UserError(f"checkpoint '{folder}' holds several copies of its trunk ({', '.join(copies)})")
    return groups[copies[0]]


def consolidate_checkpoint(
    checkpoint: str | Path,
    out: Path,
    with_heads: bool = False,
    safetensors: bool = False,
    encoder: str = "student",
) -> tuple[Path, int]:
    """Write the trunk's weights (keys as the trunk names them: torchvision names for ResNets,
    timm names for RegNets) or, with ``with_heads``, the whole method's, as one file.
    ``encoder="teacher"``: the trunk's momentum copy instead (DINO's teacher, BYOL's target...;
    ``trunk_weights`` finds it), the weights DINO's authors publish."""
    if with_heads and encoder != "student":
        raise UserError("--with-heads writes every module of the method, the teacher's included; drop --encoder")
    folder = ckpt.resolve_checkpoint(checkpoint)
    state, _ = ckpt.load_checkpoint(folder)
    model = state["model"]
    weights = dict(model) if with_heads else trunk_weights(model, encoder, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
    else:
        torch.save(weights, tmp)
    tmp.replace(out)
    return out, len(weights)
