"""Small explicit registries: component names map to classes or builders written here.

Configs name components by these keys; they never name import paths (docs/architecture.md,
principle 4). Config validation reads the valid values of a field from here (``choices``): the
components declare them when imported (``provide_choices``; a registry declares its names by
itself), and importing the ``sslframe`` package imports them, so the configuration layer never
imports a component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from sslframe.errors import UserError

T = TypeVar("T")

# A schema's ``choices``: field -> a tuple of valid values, or the name of choices a component declares.
Choices = dict[str, Any]


_CHOICES: dict[str, Callable[[], Iterable[str]]] = {}
# config group -> option name -> the dataclass its values are validated against.
_GROUP_SCHEMAS: dict[str, dict[str, type]] = {}


def register_schema(group: str, name: str, schema: type) -> None:
    """Option ``name`` of config ``group`` is validated against ``schema`` (a dataclass) and
    offered to Hydra as ``schema/<group>/<name>``, which ``configs/<group>/*.yaml`` extend."""
    options = _GROUP_SCHEMAS.setdefault(group, {})
    if options.get(name, schema) is not schema:
        raise ValueError(f"{group} schema '{name}' is registered twice")
    options[name] = schema


def registered_schemas() -> dict[str, dict[str, type]]:
    """Every config group's option schemas, as the components and the config layer declared them."""
    return {group: dict(options) for group, options in _GROUP_SCHEMAS.items()}


def provide_choices(kind: str, names: Callable[[], Iterable[str]]) -> None:
    """Declare the valid values of the config fields whose schema names ``kind`` in ``choices``."""
    _CHOICES[kind] = names


def choices(kind: str) -> list[str]:
    """The valid values declared for ``kind``, sorted."""
    if kind not in _CHOICES:
        raise KeyError(f"no component declares the choices '{kind}' (known: {', '.join(sorted(_CHOICES))})")
    return sorted(_CHOICES[kind]())


class Registry(Generic[T]):
    """A named mapping from string keys to components, with helpful errors. A registry created
    with ``choices=KIND`` declares its names as the valid values of the config fields of ``KIND``;
    one created with ``group=GROUP`` takes each component's config schema with its registration,
    so one ``register`` call drives building, validation and Hydra's config store."""

    def __init__(self, kind: str, choices: str | None = None, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        if choices is not None:
            provide_choices(choices, self.names)

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        if schema is not None:
            if self.group is None:
                raise ValueError(f"the {self.kind} registry takes no config schemas")
            register_schema(self.group, name, schema)

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} '{name}'; valid choices: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
