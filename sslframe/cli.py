"""Command-line plumbing shared by the tools: logging, and one-line errors for user mistakes."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from sslframe.errors import UserError


def setup_logging() -> None:
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    level = logging.INFO if rank == "0" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[Sequence[str]], int | None], argv: Sequence[str]) -> int:
    """Run ``main``; a ``UserError`` becomes ``error: <message>`` on stderr and its exit code."""
    setup_logging()
    try:
        return main(argv) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help", "help") for a in argv)
