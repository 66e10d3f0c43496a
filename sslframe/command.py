"""The ``sslframe`` command (installed by ``pip install -e .``): one entry point for the tools.

    sslframe train config=fmnist_simclr trainer.max_epochs=1
    sslframe eval knn checkpoint=runs/fmnist_simclr data=fashion_mnist
    sslframe plan config=seer_regnet_10b plan.images=1000000000
    sslframe curate dedup --features FEATS --out CURATED --threshold 0.95
    sslframe export export RUN_DIR --naming timm --out trunk.safetensors
    sslframe --help            # the commands, the config groups and their choices

Each command takes the arguments of ``tools/<command>.py``, which it runs; the scripts stay, for
checkouts without the package installed.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from sslframe.cli import run_cli, wants_help
from sslframe.errors import UserError

TOOLS = Path(__file__).resolve().parents[1] / "tools"
# command -> (script under tools/, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train.py", "pretrain a model here, on several local processes, or on SLURM; sweeps with -m"),
    "eval": ("eval.py", "knn, linear, lowshot, finetune, extract on a run or imported weights"),
    "plan": ("plan.py", "memory per GPU and time of a run before any GPU is used"),
    "curate": ("curate.py", "embed an image pool, remove duplicates, balance it, retrieve what resembles seeds"),
    "export": ("export.py", "a trunk under another project's names, or another project's weights in"),
    "convert": ("convert.py", "consolidate a sharded checkpoint into one state dict"),
    "sweep-status": ("sweep_status.py", "the points of a sweep: job, state, step, loss, requeues"),
    "make-shards": ("make_shards.py", "tar shards (WebDataset layout) from a folder or file list"),
    "prepare-data": ("prepare_data.py", "Fashion-MNIST from Debian's package as an image folder"),
    "plot": ("plot.py", "a run's pictures: loss and lr, online kNN, collapse, embedding map"),
}
# Commands whose arguments are config overrides: their help lists the groups and choices.
CONFIGURED = ("train", "eval", "plan")


def groups_help() -> str:
    """The config groups (their options under configs/) and the registered component choices."""
    from sslframe.config.loader import group_options
    from sslframe.registry import choices, registered_schemas

    lines = ["config groups (group=option on the command line; keys as group.key=value):"]
    for group in ("config", *sorted(registered_schemas())):
        options = group_options(group)
        if options:
            lines.append(f"  {group:<12} {', '.join(options)}")
    lines.append("registered names (fields that take them):")
    for kind, field in (
        ("resnet_archs", "trunk.arch (resnet)"),
        ("regnet_archs", "trunk.arch (regnet)"),
        ("data_sources", "data.source"),
        ("optimizers", "optim.name"),
        ("schedules", "schedule.name"),
    ):
        lines.append(f"  {field:<20} {', '.join(choices(kind))}")
    return "\n".join(lines)


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join([(__doc__ or "").strip(), "", "commands:", *rows, "", groups_help()])


def run_tool(name: str, argv: Sequence[str]) -> int:
    """``tools/<script>.py``'s ``main`` on ``argv``, in this process."""
    script, _ = COMMANDS[name]
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))  # the scripts import their ``_path`` helper
    tool = runpy.run_path(str(TOOLS / script), run_name=f"sslframe_{name.replace('-', '_')}")
    code = run_cli(tool["main"], list(argv))
    if name in CONFIGURED and wants_help(argv):
        print("\n" + groups_help())
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return run_cli(lambda _: _unknown(name), [])
    return run_tool(name, rest)


def _unknown(name: str) -> int:
    raise UserError(f"unknown command '{name}'; valid choices: {', '.join(COMMANDS)} (sslframe --help)")


if __name__ == "__main__":
    sys.exit(main())
