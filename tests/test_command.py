"""The ``sslframe`` command: its help lists the commands, the config groups and their choices,
each command runs its tool with the tool's arguments, and mistakes get one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sslframe.command import COMMANDS, main
from tests.helpers import ROOT


def test_help_lists_commands_groups_and_choices(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in out
    assert "method       barlowtwins, byol, deepclusterv2" in out and "optim.name           adamw, lars, sgd" in out


def test_a_command_runs_its_tool_and_its_help_adds_the_groups(capsys) -> None:
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Pretrain a model, here or on a SLURM cluster." in out and "config groups" in out
    assert main(["eval", "probe", "checkpoint=x"]) == 2
    assert "unknown evaluation 'probe'; valid choices: embed, extract, finetune, knn" in capsys.readouterr().err
    assert main(["curate", "sort"]) == 2
    assert "unknown curation step 'sort'; valid choices: embed, dedup, balance, retrieve" in capsys.readouterr().err
    assert main(["curate", "--help"]) == 0 and "balanced sampling" in capsys.readouterr().out


def test_unknown_command_is_one_line(capsys) -> None:
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: unknown command 'trian'; valid choices: {', '.join(COMMANDS)} (sslframe --help)"
    )


def test_the_installed_console_script() -> None:
    """``pip install -e .`` (make install) puts ``sslframe`` next to the interpreter."""
    script = Path(sys.executable).parent / "sslframe"
    assert script.is_file(), "reinstall the package (make install) to get the sslframe command"
    done = subprocess.run([str(script), "plan", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "will it fit" in done.stdout.lower() + done.stderr.lower()
