"""Typed interfaces of the extension points: what the daemon needs from a log source, a
firewall backend, a relay map and a pull-style service (structural: no base class needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from logwatch.engine.model import Ban, Position


@runtime_checkable
class Source(Protocol):
    """Reads whole lines and hands them to its on_chunk callback."""

    def fileno(self) -> int | None: ...     # None: polled on the "poll" timer
    def process(self) -> None: ...
    def stats(self) -> Mapping[str, Mapping[str, Any]]: ...
    def save_positions(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class StreamSource(Source, Protocol):
    """A source that ends (stdin): eof once the writer closed it; pending while input is
    readable without waiting (a regular file on stdin, which epoll refuses)."""

    eof: bool
    pending: bool


@runtime_checkable
class FileSource(Source, Protocol):
    """A source of files with byte offsets (the tailer): shown in status."""

    def positions(self) -> list[Position]: ...


@runtime_checkable
class WatchesMissing(Protocol):
    """A source that warns (rate-limited) about configured files still missing."""

    def check_missing(self) -> None: ...


class Firewall(Protocol):
    """A firewall backend (firewall.py): bans in the kernel."""

    backend: str

    def setup(self) -> None: ...
    def ban(self, bans: Sequence[Ban]) -> None: ...
    def unban(self, nets: Sequence[str]) -> None: ...
    def reconcile(self, bans: Sequence[Ban], now: float) -> None: ...
    def listing(self) -> set[str]: ...
    def flush(self) -> None: ...


class RelayMap(Protocol):
    """A Postfix relay map (relaymap.py): grants on disk."""

    def add(self, ips: Iterable[str]) -> None: ...
    def remove(self, ips: Iterable[str]) -> None: ...
    def rebuild(self, ips: Iterable[str]) -> None: ...
    def check(self) -> bool: ...


@runtime_checkable
class Service(Protocol):
    """A listening socket answering requests (services/__init__.py): started once its fds
    can be registered on the loop, asked for its next timer, closed at stop."""

    name: str

    def start(self) -> None: ...
    def next_deadline(self) -> float | None: ...
    def expire_idle(self, now: float | None = None) -> int: ...
    def close(self) -> None: ...
