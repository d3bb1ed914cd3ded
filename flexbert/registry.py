"""Name -> implementation registries, used for every swappable block.

A registry error names the choices and the closest one, e.g.
``unknown attention kernel 'flsh_attn' at model.attn_backend; choices: auto, eager,
flash_attn, flex, sdpa; did you mean 'flash_attn'?``
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from flexbert.errors import ConfigError, closest

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named collection of variants of one kind of block."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding `obj` under `name`; a duplicate name is a bug."""

        def add(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str, where: str | None = None) -> T:
        """Return the variant called `name`; `where` is the config key, for the error."""
        if name in self._items:
            return self._items[name]
        at = f" at {where}" if where else ""
        guess = closest(name, self._items)
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise ConfigError(f"unknown {self.kind} '{name}'{at}; choices: {', '.join(self.names())}{hint}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
