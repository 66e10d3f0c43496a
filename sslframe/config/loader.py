"""Compose configs with Hydra's compose API and turn every user mistake into one clear line.

We call ``hydra.compose`` ourselves instead of ``@hydra.main`` so that errors are ours to word
(one line naming the bad key and the valid choices, no traceback) and so Hydra never changes
the working directory or writes its own output folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslframe.config.schema import PRIMARY_SCHEMAS, SECTION_SCHEMAS
from sslframe.errors import UserError
from sslframe.registry import choices, registered_schemas

log = logging.getLogger(__name__)

CONFIG_DIR = Path(os.environ.get("SSLFRAME_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))


def section_schemas() -> dict[str, dict[str, type]]:
    """What ``validate`` checks: every config group's option schemas (the configuration's own and
    the components' registered ones) and the fixed sections of the primary configs."""
    return {**registered_schemas(), **{name: {name: schema} for name, schema in SECTION_SCHEMAS.items()}}


def _register_schemas() -> None:
    """Hydra's config store: ``schema/<group>/<option>`` for every registered schema (components
    register theirs when imported, so this runs at each composition, idempotently)."""
    store = ConfigStore.instance()
    for group, options in registered_schemas().items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    for name, schema in PRIMARY_SCHEMAS.items():
        store.store(name=name, node=schema)


def group_options(group: str) -> list[str]:
    """The option names available in a config group (the yaml files under configs/<group>)."""
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _explain(exc: BaseException) -> str:
    """One line describing a Hydra / OmegaConf composition failure."""
    if isinstance(exc, MissingConfigException):
        text = str(exc)
        missing = re.search(r"Could not find '([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        if missing and "/" in missing.group(1):
            group, option = missing.group(1).rsplit("/", 1)
            if group == "config":
                options = group_options("config")
            return f"unknown option '{option}' for config group '{group}'; valid choices: {', '.join(options)}"
        return text.splitlines()[0]
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OmegaConfBaseException):
        message = _explain_omegaconf(cause)
        source = re.match(r"In '([^']+)'", str(exc))
        if source and source.group(1).startswith("config/"):
            # An experiment sets a key that the group option chosen on the command line lacks.
            message += f" (set by {source.group(1)}.yaml; pick an experiment made for this option)"
        return message
    return str(exc).splitlines()[0]


def _explain_omegaconf(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or "?"
    schema = getattr(exc, "object_type", None)
    message = str(exc).splitlines()[0]
    if "not in" in message or "not in struct" in message or ("Key '" in message and "not" in message):
        valid = ", ".join(_field_names(schema)) if dataclasses.is_dataclass(schema) else ""
        group = key.split(".")[0]
        groups = registered_schemas()
        if not valid and group in groups:
            valid = ", ".join(sorted({n for s in groups[group].values() for n in _field_names(s)}))
        return f"unknown key '{key}'" + (f"; valid keys: {valid}" if valid else "")
    return f"bad value for '{key}': {message}"


def _schema_for(group: str, node: Any) -> type | None:
    options = section_schemas().get(group)
    if not options or not isinstance(node, DictConfig):
        return None
    if len(options) == 1:
        return next(iter(options.values()))
    # A trunk family (timm) names its option by ``family``; ``name`` is then the model's own name.
    name = node.get("family") or node.get("name")
    if name not in options:
        raise UserError(f"unknown {group} '{name}'; valid choices: {', '.join(sorted(options))}")
    return options[name]


def _choice_values(spec: Any) -> Sequence[str]:
    """A tuple of values, or the name of choices a component declares (``sslframe.registry``)."""
    if isinstance(spec, tuple):
        return spec
    return choices(spec)


def validate(cfg: DictConfig) -> None:
    """Check the composed config against the schemas; raise UserError on the first problem."""
    for group in section_schemas():
        if group not in cfg:
            continue
        node = cfg[group]
        schema = _schema_for(group, node)
        if schema is None:
            continue
        allowed = set(_field_names(schema))
        for key in node:
            if key not in allowed:
                raise UserError(f"unknown key '{group}.{key}'; valid keys: {', '.join(_field_names(schema))}")
        try:
            OmegaConf.merge(OmegaConf.structured(schema), node)
        except OmegaConfBaseException as exc:
            raise UserError(_explain_omegaconf(exc)) from None
        for key, spec in getattr(schema, "choices", {}).items():
            value = node.get(key)
            valid = _choice_values(spec)
            if value not in valid:
                raise UserError(f"bad value for '{group}.{key}': '{value}'; valid choices: {', '.join(valid)}")
        for key, least in getattr(schema, "minimums", {}).items():
            if node.get(key) is not None and node.get(key) < least:
                raise UserError(f"bad value for '{group}.{key}': {node.get(key)}; it must be {least} or more")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"missing value for '{missing[0]}' (set it on the command line: {missing[0]}=...)")


def swapped_groups(overrides: Sequence[str]) -> dict[str, str]:
    """``group -> option`` for the overrides that pick another option of a config group whose
    options have different schemas (``trunk=regnet``, ``method=byol``)."""
    swaps = {}
    for override in overrides:
        key, eq, value = override.partition("=")
        if eq and key in registered_schemas() and len(registered_schemas()[key]) > 1:
            swaps[key] = value
    return swaps


def _foreign_keys(group: str, option: str) -> set[str] | None:
    """The keys ``option``'s schema has (a group's options register their schema under the
    option's name); None where there is none, and nothing is left out."""
    schema = registered_schemas().get(group, {}).get(option)
    return None if schema is None else set(_field_names(schema))


def _overlay(swaps: dict[str, str], folder: Path, used: set[str]) -> list[str]:
    """A copy of the config tree in ``folder`` in which the experiment and recipes this
    composition uses (``used``: ``config/<name>`` and ``recipe/<name>``, package ``_global_``) no
    longer set, under a group swapped on the command line, the keys that the chosen option does
    not have: the user picked another trunk or method, whose own defaults apply. Returns what was
    left out, for the log. Files the composition does not read are copied as they are (rewriting
    all of them cost about a second of every composition)."""
    shutil.copytree(CONFIG_DIR, folder, dirs_exist_ok=True)
    dropped = []
    allowed = {group: _foreign_keys(group, option) for group, option in swaps.items()}
    for name in sorted(used):
        path = folder / f"{name}.yaml"
        if not path.is_file():
            continue
        text = path.read_text()
        if not text.startswith("# @package _global_"):
            continue
        node = OmegaConf.to_container(OmegaConf.load(path))
        changed = False
        for group, keep in allowed.items():
            section = node.get(group) if isinstance(node, dict) else None
            if keep is None or not isinstance(section, dict):
                continue
            for key in [k for k in section if k not in keep]:
                del section[key]
                dropped.append(f"{group}.{key} ({name})")
                changed = True
        if changed:
            path.write_text("# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(node)))
    return dropped


def _experiment_files(primary: str, overrides: Sequence[str]) -> set[str]:
    """``config/<name>`` of the experiment this composition uses, the recipes it includes, and a
    recipe added on the command line (``+recipe=<name>``)."""
    picked = {}
    for override in overrides:
        key, eq, value = override.partition("=")
        if eq and key.lstrip("+~") in ("config", "recipe"):
            picked[key.lstrip("+~")] = value
    if "config" not in picked:
        defaults = OmegaConf.load(CONFIG_DIR / f"{primary}.yaml").get("defaults", [])
        name = next((d["config"] for d in defaults if isinstance(d, DictConfig) and "config" in d), None)
        if name:
            picked["config"] = name
    files = {f"{group}/{name}" for group, name in picked.items() if name}
    pending = list(files)
    while pending:
        path = CONFIG_DIR / f"{pending.pop()}.yaml"
        if not path.is_file():
            continue
        for entry in OmegaConf.load(path).get("defaults", []):
            if isinstance(entry, str) and entry.startswith("/") and entry[1:] not in files:
                files.add(entry[1:])
                pending.append(entry[1:])
    return files


def compose_config(primary: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``configs/<primary>.yaml`` with command-line overrides and validate it.

    A group swapped on the command line (``config=quickstart trunk=regnet``) takes the new
    option's schema: what the experiment sets under that group and the option lacks (a ResNet's
    ``width_multiplier`` for a RegNet) is left out, with a log line; what both have is kept."""
    GlobalHydra.instance().clear()
    _register_schemas()
    swaps = swapped_groups(overrides)
    try:
        with tempfile.TemporaryDirectory(prefix="sslframe-configs-") as tmp:
            config_dir = CONFIG_DIR
            if swaps:
                config_dir = Path(tmp)
                dropped = _overlay(swaps, config_dir, _experiment_files(primary, overrides))
                if dropped:
                    log.info("not carried over to the option chosen on the command line: %s", ", ".join(dropped))
            with initialize_config_dir(config_dir=str(config_dir), version_base=None):
                cfg = compose(config_name=primary, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(_explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    try:
        validate(cfg)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise UserError(_explain_omegaconf(exc)) from None
    return cfg


def config_hash(cfg: DictConfig, sections: Sequence[str] = ("trunk", "head", "method")) -> str:
    """A short hash of the config sections that define the model's shape and state."""
    text = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [s for s in sections if s in cfg]), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tmp.replace(path)
