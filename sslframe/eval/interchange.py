"""Trunk weights in and out of other projects' layouts, by explicit key maps (no prefix surgery).

A *naming* maps each of our trunk's parameter names to another model's (torchvision, timm,
VISSL/ClassyVision); a *layout* says where a published checkpoint keeps the trunk (SwAV repo:
``module.`` prefixed, heads ``projection_head``/``prototypes``; DINO: ``teacher``/``student``
dicts with ``backbone.``; VISSL/SEER: ``classy_state_dict.base_model.model.trunk`` holding
``_feature_blocks.*``) and which naming its keys use. Imports go through our trunk's own key
list, so every load can report missing and unexpected keys; files load with ``weights_only``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sslframe.errors import UserError
from sslframe.models.trunks import Trunk
from sslframe.models.trunks.regnet import REGNET_ARCHS, RegNet
from sslframe.models.trunks.resnet import RESNET_ARCHS, ResNet
from sslframe.models.trunks.vit import VisionTransformer

NAMINGS = ("sslframe", "torchvision", "timm", "vissl")

_REGNET_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(.+)$")

# Inside a RegNet block: our (timm's) module names -> torchvision's and ClassyVision's (VISSL).
_REGNET_TORCHVISION = {
    "conv1.conv": "f.a.0",
    "conv1.bn": "f.a.1",
    "conv2.conv": "f.b.0",
    "conv2.bn": "f.b.1",
    "se.fc1": "f.se.fc1",
    "se.fc2": "f.se.fc2",
    "conv3.conv": "f.c.0",
    "conv3.bn": "f.c.1",
    "downsample.conv": "proj.0",
    "downsample.bn": "proj.1",
}
_REGNET_VISSL = {
    **_REGNET_TORCHVISION,
    "se.fc1": "f.se.excitation.0",
    "se.fc2": "f.se.excitation.2",
    "conv3.conv": "f.c",
    "conv3.bn": "f.final_bn",
    "downsample.conv": "proj",
    "downsample.bn": "bn",
}


def _rename_module(rest: str, table: Mapping[str, str]) -> str:
    module, _, leaf = rest.rpartition(".")
    if module not in table:
        raise KeyError(rest)
    return f"{table[module]}.{leaf}"


def _regnet_name(key: str, naming: str) -> str:
    """torchvision ``trunk_output.block{i}.block{i}-{j-1}``; VISSL wraps ClassyVision's RegNet in
    ``_feature_blocks`` with the stem as ``conv1`` and stage i as ``res{i+1}`` (vissl/models/trunks/regnet.py)."""
    if naming in ("sslframe", "timm"):
        return key
    stem = {"torchvision": "stem.", "vissl": "_feature_blocks.conv1.stem."}[naming]
    if key.startswith("stem."):
        return stem + key[len("stem.") :].replace("conv.", "0.").replace("bn.", "1.")
    match = _REGNET_BLOCK.match(key)
    if match is None:
        raise KeyError(key)
    stage, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    if naming == "torchvision":
        return f"trunk_output.block{stage}.block{stage}-{block - 1}.{_rename_module(rest, _REGNET_TORCHVISION)}"
    return f"_feature_blocks.res{stage + 1}.block{stage}-{block - 1}.{_rename_module(rest, _REGNET_VISSL)}"


def _resnet_name(key: str, naming: str) -> str:
    """Our ResNet already uses torchvision's names, which timm, SwAV and DINO share; VISSL's
    ResNeXt trunk keeps them under ``_feature_blocks``."""
    return f"_feature_blocks.{key}" if naming == "vissl" else key


def _vit_name(key: str, naming: str) -> str:
    """timm's VisionTransformer (also DINO's and MAE's backbones) calls the blocks ``blocks`` and
    the patch projection ``patch_embed.proj``."""
    if naming == "sslframe":
        return key
    if naming != "timm":
        raise UserError(f"no {naming} key map for ViT trunks; use naming timm")
    return key.replace("blocks_list.", "blocks.", 1).replace("patch_embed.", "patch_embed.proj.", 1)


def _identity_name(key: str, naming: str) -> str:
    if naming not in ("sslframe", "timm"):
        raise UserError(f"no {naming} key map for this trunk; use naming sslframe or timm")
    return key


def trunk_for_arch(arch: str) -> Trunk:
    """A freshly initialised ResNet or RegNet trunk named by its architecture, for imported weights."""
    if arch in RESNET_ARCHS:
        return ResNet(arch)
    if arch in REGNET_ARCHS:
        return RegNet(arch)
    raise UserError(
        f"unknown trunk arch '{arch}' for imported weights; valid choices: {', '.join([*RESNET_ARCHS, *REGNET_ARCHS])}"
    )


def external_name(trunk: Trunk, key: str, naming: str) -> str:
    """The name another project gives to our trunk parameter ``key``."""
    if naming not in NAMINGS:
        raise UserError(f"unknown naming '{naming}'; valid choices: {', '.join(NAMINGS)}")
    rename: Callable[[str, str], str] = _identity_name
    if isinstance(trunk, ResNet):
        rename = _resnet_name
    elif isinstance(trunk, RegNet):
        rename = _regnet_name
    elif isinstance(trunk, VisionTransformer):
        rename = _vit_name
    return rename(key, naming)


def export_trunk(trunk: Trunk, naming: str = "torchvision") -> dict[str, torch.Tensor]:
    """The trunk's weights under another project's names (loads into its model with only the
    classifier missing). A ViT with fixed sine-cosine positions exports them as ``pos_embed``
    for the patch tokens only (timm's ``no_embed_class=True`` layout)."""
    state = {external_name(trunk, k, naming): v.detach().cpu().contiguous() for k, v in trunk.state_dict().items()}
    if isinstance(trunk, VisionTransformer) and naming != "sslframe":
        state.pop("mask_token", None)  # used in pretraining only; timm's ViT has none
    if isinstance(trunk, VisionTransformer) and trunk.pos_embed is None and naming != "sslframe":
        state["pos_embed"] = trunk.position_embeddings(trunk.grid, trunk.grid).detach().cpu().contiguous()
    return state


@dataclass
class LoadReport:
    """What an import matched: keys of our trunk it did not find, keys it did not know, and
    keys of known heads (projection, prototypes, classifier) it dropped on purpose."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

        return (
            f"missing {len(self.missing)} [{few(self.missing)}], unexpected {len(self.unexpected)} "
            f"[{few(self.unexpected)}], ignored head keys {len(self.ignored)}"
        )


@dataclass(frozen=True)
class Layout:
    """Where a published checkpoint keeps the trunk and which naming its keys follow."""

    naming: str
    # Keys tried in order to find the state dict inside the file (nested dicts: "a.b.c").
    containers: tuple[str, ...] = ()
    # Prefixes stripped from every key, in order, when present.
    prefixes: tuple[str, ...] = ()
    # Key prefixes (after stripping) of heads that are not part of the trunk.
    heads: tuple[str, ...] = ("fc.", "head.", "heads.")


LAYOUTS: dict[str, Layout] = {
    "sslframe": Layout("sslframe", ("model", "state_dict"), ("trunk.",), ("projection.", "prototypes", "head")),
    "torchvision": Layout("torchvision", ("state_dict", "model")),
    "timm": Layout("timm", ("state_dict", "model", "state_dict_ema")),
    # SwAV repo (main_swav.py / hubconf.py): a DDP state dict, alone or under "state_dict".
    "swav": Layout("torchvision", ("state_dict",), ("module.",), ("projection_head.", "prototypes")),
    # DINO (main_dino.py): {"teacher", "student", ...}; the MultiCropWrapper keeps "backbone" and "head".
    "dino": Layout("timm", ("teacher", "student"), ("module.", "backbone."), ("head.", "fc.")),
    # VISSL / SEER: classy_state_dict.base_model.model.{trunk, heads}; converted files use "trunk.".
    "vissl": Layout("vissl", ("classy_state_dict.base_model.model.trunk", "model.trunk", "trunk"), ("trunk.",)),
}


def read_state_file(path: str | Path) -> dict[str, Any]:
    """A ``.safetensors`` file, or a torch file loaded with ``weights_only=True`` (pickled code
    is refused). ``argparse.Namespace`` is allowed: DINO stores its arguments in one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise UserError(f"'{path}' is not a readable safetensors file: {str(exc).splitlines()[0]}") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"refusing to load '{path}': not a plain weights file ({first})") from None
    if not isinstance(obj, dict):
        raise UserError(f"'{path}' holds a {type(obj).__name__}, not a state dict")
    return obj


def _find_container(obj: Mapping[str, Any], layout: Layout) -> Mapping[str, Any]:
    for path in layout.containers:
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node:
            return node
    return obj


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def import_state(trunk: Trunk, obj: Mapping[str, Any], layout: str) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Our trunk's state dict from a checkpoint object in ``layout``, with what did not match."""
    if layout not in LAYOUTS:
        raise UserError(f"unknown checkpoint layout '{layout}'; valid choices: {', '.join(LAYOUTS)}")
    spec = LAYOUTS[layout]
    ours = {external_name(trunk, k, spec.naming): k for k in trunk.state_dict()}
    state: dict[str, torch.Tensor] = {}
    report = LoadReport()
    for key, value in _find_container(obj, spec).items():
        if not isinstance(value, torch.Tensor):
            continue
        name = _strip(key, spec.prefixes)
        if name in ours:
            state[ours[name]] = value
        elif name == "pos_embed" and isinstance(trunk, VisionTransformer):
            state[name] = value  # fixed positions: compared in _vit_positions
        elif name.startswith(spec.heads):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    if isinstance(trunk, VisionTransformer):
        _vit_positions(trunk, state, report)
    report.missing = [k for k in trunk.state_dict() if k not in state]
    return state, report


def _vit_positions(trunk: VisionTransformer, state: dict[str, torch.Tensor], report: LoadReport) -> None:
    """Adapt ``pos_embed`` to our ViT, which adds positions to the patch tokens only. A class-token
    position (timm's default, DINO, MAE) is folded into the class token: (cls + p0) is what enters
    the first block either way. Into fixed sine-cosine positions, only those same values load."""
    pos = state.get("pos_embed")
    if pos is None:
        return
    if trunk.pos_embed is None:
        state.pop("pos_embed")
        fixed = trunk.position_embeddings(trunk.grid, trunk.grid).detach()
        tokens = pos[:, -fixed.shape[1] :] if pos.shape[1] >= fixed.shape[1] else pos
        if tokens.shape != fixed.shape or not torch.allclose(tokens, fixed, atol=1e-5):
            half = fixed.shape[-1] // 2
            # The MAE and I-JEPA authors' get_2d_sincos_pos_embed puts the column code in the first
            # half of the channels, ours the row code: the same positions, transposed for the network.
            authors = torch.cat([fixed[..., half:], fixed[..., :half]], dim=-1)
            if tokens.shape == fixed.shape and torch.allclose(tokens, authors, atol=1e-5):
                report.unexpected.append(
                    "pos_embed (sine-cosine positions with the column code first, the MAE / I-JEPA authors' "
                    "channel order; ours puts the row code first: set trunk.pos_embed=learned to load them as they are)"
                )
            else:
                report.unexpected.append("pos_embed (learned positions; set trunk.pos_embed=learned)")
        return
    extra = pos.shape[1] - trunk.pos_embed.shape[1]
    if extra == 1 and "cls_token" in state:
        state["cls_token"] = state["cls_token"] + pos[:, :1]
        state["pos_embed"] = pos[:, 1:]


def load_trunk_weights(trunk: Trunk, source: str | Path, layout: str, strict: bool = True) -> LoadReport:
    """Load a weights file of ``layout`` into ``trunk``; with ``strict``, any missing or
    unexpected key is an error naming them. Shapes are checked either way."""
    state, report = import_state(trunk, read_state_file(source), layout)
    if strict and not report.ok:
        raise UserError(f"'{source}' does not match the trunk as layout {layout}: {report.summary()}")
    try:
        trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UserError(f"'{source}' does not fit the trunk: {detail}") from None
    return report


def save_state_file(state: Mapping[str, torch.Tensor], out: Path) -> Path:
    """``.safetensors`` by suffix, a plain ``torch.save`` state dict otherwise; written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp))
    else:
        torch.save(tensors, tmp)
    tmp.replace(out)
    return out
