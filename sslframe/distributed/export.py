"""Plain state dicts out of training checkpoints (for evaluation, sharing and other tools)."""

from __future__ import annotations

from pathlib import Path

import torch

from sslframe.distributed import checkpoint as ckpt
from sslframe.errors import UserError


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
    ``sslframe.eval.features.trunk_weights`` finds it), the weights DINO's authors publish."""
    from sslframe.eval.features import trunk_weights

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
