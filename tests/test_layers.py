"""Layering is one-way: every module imports only from its own layer or the layers below it, as
the table in docs/architecture.md says (read from there, so the document and the code agree)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import ROOT


def layer_table() -> list[list[str]]:
    """The paths of each layer, top (entry points) first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| layer") and "`" in line:
            layers.append(re.findall(r"`([^`]+)`", line.split("|")[2]))
    return layers


def owner(path: str, layers: list[list[str]]) -> int | None:
    """Index of the layer holding ``path`` (a file path relative to the repository)."""
    for index, entries in enumerate(layers):
        for entry in entries:
            if path == entry or (entry.endswith("/") and path.startswith(entry)):
                return index
    return None


def module_path(module: str) -> str | None:
    """The repository path of an sslframe/tools/launch/bench module name (None for others)."""
    parts = module.split(".")
    if parts[0] not in ("sslframe", "launch", "bench", "tools"):
        return None
    as_dir = ROOT.joinpath(*parts)
    if as_dir.is_dir():
        return "/".join(parts) + "/__init__.py"
    return "/".join(parts) + ".py"


def imports(tree: ast.AST, package: str) -> list[str]:
    """Every module a file imports, anywhere in it (``from sslframe import x`` as ``sslframe.x``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(candidate if is_module(candidate) else base)
    return found


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository (not a name inside one)."""
    path = ROOT.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def test_no_module_imports_up_the_layer_table() -> None:
    layers = layer_table()
    assert len(layers) == 5 and layers[0][0] == "tools/", layers
    violations = []
    checked = 0
    for folder in ("sslframe", "launch", "bench", "tools"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            mine = owner(rel, layers)
            assert mine is not None, f"{rel} is in no layer of docs/architecture.md"
            package = ".".join(file.relative_to(ROOT).with_suffix("").parts[:-1])
            for module in imports(ast.parse(file.read_text()), package):
                target = module_path(module)
                theirs = owner(target, layers) if target else None
                if theirs is not None and theirs < mine:
                    violations.append(f"{rel} imports {module}")
            checked += 1
    assert checked > 100
    assert not violations, "imports up the layer table:\n" + "\n".join(violations)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """A foundation module importing the trainer is reported (the test above can fail)."""
    layers = layer_table()
    tree = ast.parse("def f():\n    from sslframe.engine.trainer import Trainer\n")
    (module,) = imports(tree, "sslframe.distributed")
    assert owner(module_path(module), layers) < owner("sslframe/distributed/env.py", layers)
