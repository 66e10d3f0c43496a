"""Small explicit registries: component names map to classes or builders written here.

Configs name components by these keys; they never name import paths (docs/architecture.md,
principle 4). Config validation reads the valid values of a field from here (``choices``): the
components declare them when imported (``provide_choices``; a registry declares its names by
itself), and importing the ``sslframe`` package imports them, so the configuration layer never
imports a component.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from sslframe.errors import UserError

T = TypeVar("T")


_CHOICES: dict[str, Callable[[], Iterable[str]]] = {}


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
    with ``choices=KIND`` declares its names as the valid values of the config fields of ``KIND``."""

    def __init__(self, kind: str, choices: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        if choices is not None:
            provide_choices(choices, self.names)

    def register(self, name: str) -> Callable[[T], T]:
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
