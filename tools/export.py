#!/usr/bin/env python
"""Move trunk weights between sslframe and other projects.

    python tools/export.py export CHECKPOINT --naming torchvision --out trunk.safetensors
    python tools/export.py import WEIGHTS --layout dino --arch resnet50 --out trunk.pt
    python tools/export.py export RUN_DIR --format hf|timm|torchvision|onnx --out DIR [--license mit]

``export`` writes the trunk of a training checkpoint (run dir, checkpoint folder or meta.json)
with the key names of torchvision, timm or VISSL (ResNets already use torchvision's and timm's
names, RegNets timm's), as .safetensors or a plain .pt state dict: it loads into the
equivalent model with only the classifier missing. ``import`` reads a torchvision, timm, SwAV,
DINO or VISSL/SEER file (never running pickled code), maps it to our names for the trunk
``--arch`` (e.g. resnet50, regnet_y_400mf), reports missing and unexpected keys, and writes it.
Loads are strict unless --non-strict. ``--format`` writes a folder instead: ``hf`` (timm-loadable
weights, config.json and a model card generated from the run and its evaluations), ``timm`` or
``torchvision`` (the state dict alone), ``onnx`` (dynamic batch, checked with onnxruntime).
``--encoder teacher`` exports the momentum (EMA) copy of the trunk that BYOL, MoCo, DINO, iBOT,
DINOv2 and I-JEPA keep (the weights DINO's authors publish) instead of the trained trunk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import _path  # noqa: F401

from sslframe.cli import run_cli
from sslframe.config.schema.eval import ENCODERS
from sslframe.eval.features import load_trunk
from sslframe.eval.interchange import (
    LAYOUTS,
    NAMINGS,
    export_trunk,
    load_trunk_weights,
    save_state_file,
    trunk_for_arch,
)
from sslframe.eval.publish import FORMATS, export_run


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="a checkpoint's trunk under another project's key names")
    export.add_argument("checkpoint")
    export.add_argument("--naming", choices=NAMINGS, default="torchvision")
    export.add_argument(
        "--format", choices=FORMATS, default=None, help="hf (folder with a model card), timm, torchvision, onnx"
    )
    export.add_argument("--license", default="other", help="the model card's licence field (--format hf)")
    export.add_argument(
        "--encoder",
        choices=ENCODERS,
        default="student",
        help="teacher: the method's momentum (EMA) copy of the trunk (BYOL, MoCo, DINO, iBOT, DINOv2, I-JEPA)",
    )
    export.add_argument(
        "--out", type=Path, required=True, help="with --format: a folder; else .safetensors or a torch state dict"
    )
    imp = sub.add_parser("import", help="another project's weights as an sslframe trunk state dict")
    imp.add_argument("weights", type=Path)
    imp.add_argument("--layout", choices=list(LAYOUTS), required=True)
    imp.add_argument("--arch", required=True, help="trunk architecture, e.g. resnet50 or regnet_y_400mf")
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--non-strict", action="store_true", help="accept missing or unexpected keys")
    args = parser.parse_args(argv)
    if args.command == "export" and args.format:
        for path in export_run(args.checkpoint, args.format, args.out, args.license, args.encoder):
            print(f"wrote {path}")
        return 0
    if args.command == "export":
        trunk, _, folder = load_trunk(args.checkpoint, encoder=args.encoder)
        path = save_state_file(export_trunk(trunk, args.naming), args.out)
        whose = "teacher trunk" if args.encoder == "teacher" else "trunk"
        print(f"wrote the {whose} of {folder} with {args.naming} names to {path}")
        return 0
    trunk = trunk_for_arch(args.arch)
    report = load_trunk_weights(trunk, args.weights, args.layout, strict=not args.non_strict)
    print(f"{args.weights} as {args.layout}: {report.summary()}")
    path = save_state_file(trunk.state_dict(), args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
