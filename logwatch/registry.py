"""One registry per extension point: a name maps to the entry that owns it (its factory, config
keys and validation, and what it holds in the kernel or on disk)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """The named entries of one extension point (firewall backends, map types, sources, services)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add an entry under its name; a second entry of the same name is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of that name; KeyError naming the known ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r} (known: {', '.join(self.names())})") \
                from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (the CLI choices, the config's allowed values)."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())
