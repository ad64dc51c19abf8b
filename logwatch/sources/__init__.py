"""Log sources: file tailer, journald reader and stdin, all delivering chunks of whole lines.

Every source has the same shape for the daemon's single selectors loop:
``fileno()`` (an fd to watch for reading, or None when it must be polled), ``process()``
(read what is available and hand it on), ``save_positions()``, ``stats()`` and ``close()``.
Data goes to ``on_chunk(source_name, chunk)``; a chunk holds only complete lines, each ending
with b"\\n", and may be several MB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logwatch.registry import Registry
from logwatch.util.checks import Check

if TYPE_CHECKING:
    from logwatch.daemon.config import SourcesConfig
    from logwatch.state.store import Store

OnChunk = Callable[[str, bytes], None]

DEFAULT_MAX_LINE = 65536


class LineBuffer:
    """Cuts a byte stream into complete lines, holds back a partial last line and skips
    lines longer than ``max_line`` with bounded memory."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be positive, not {max_line}")
        self.max_line = max_line
        self._buf = b""
        self._skipping = False
        # Bytes fed but neither returned nor skipped yet (the partial line, or the part of an
        # overlong line seen so far): the file tailer subtracts it to know where to resume.
        self.held = 0
        self.lines = 0
        self.skipped_long = 0

    def feed(self, data: bytes) -> bytes:
        """Add data; return the complete lines now available (possibly b"")."""
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self.held += len(data)
                return b""
            self._skipping = False
            self.skipped_long += 1
            self.held = 0
            data = data[nl + 1:]
        elif self._buf:
            data = self._buf + data
            self._buf = b""
        last = data.rfind(b"\n")
        if last < 0:
            out, rest = b"", data
        else:
            out, rest = data[: last + 1], data[last + 1:]
        if len(rest) > self.max_line:
            self._skipping = True
            self._buf = b""
        else:
            self._buf = rest
        self.held = len(rest)
        if len(out) > self.max_line:
            out = self._drop_long(out)
        self.lines += out.count(b"\n")
        return out

    def _drop_long(self, out: bytes) -> bytes:
        """Remove lines longer than max_line from a block of complete lines."""
        # Step from line start to line start by looking for the LAST newline within the next
        # max_line+1 bytes: a few C-level scans per block instead of one Python step per line.
        limit = self.max_line + 1
        keep: list[bytes] = []
        pos = kept_from = 0
        size = len(out)
        while pos < size:
            nl = out.rfind(b"\n", pos, pos + limit)
            if nl >= 0:
                pos = nl + 1
                continue
            end = out.find(b"\n", pos)          # exists: out ends with a newline
            keep.append(out[kept_from:pos])
            self.skipped_long += 1
            pos = kept_from = end + 1
        if not keep:
            return out
        keep.append(out[kept_from:])
        return b"".join(keep)

    def flush(self) -> bytes:
        """Return a held partial line terminated with a newline (the stream has ended)."""
        if self._skipping:
            self._skipping = False
            self.skipped_long += 1
            self.held = 0
            return b""
        rest, self._buf, self.held = self._buf, b"", 0
        if not rest:
            return b""
        self.lines += 1
        return rest + b"\n"

    def reset(self) -> None:
        """Forget the partial line (the stream restarts elsewhere)."""
        self._buf = b""
        self._skipping = False
        self.held = 0


@dataclass(frozen=True)
class SourceKey:
    """A key under `sources:` that a source type owns: its check, and for a key SourcesConfig
    has no field for, its type and default (the value is then in SourcesConfig.extra)."""

    check: Check | None = None
    duration: bool | None = None    # read as a duration (90, 30s, 1h); True: 0 is allowed
    type: Any = None
    default: Any = None


@dataclass(frozen=True)
class SourceContext:
    """What a source's factory gets from the daemon besides the sources section."""

    on_chunk: OnChunk
    store: Store | None = None


@dataclass(frozen=True)
class SourceType:
    """One kind of source: its name, its config keys, when it is on, and its factory."""

    name: str
    enabled: Callable[[SourcesConfig], bool]
    build: Callable[[SourcesConfig, SourceContext], Any]
    keys: dict[str, SourceKey] = field(default_factory=dict)


# The source types, in the order the daemon builds them (file tailer, journal, stdin).
SOURCES: Registry[SourceType] = Registry("source")


def build_sources(section: SourcesConfig, ctx: SourceContext) -> list[Any]:
    """A source for every registered type the sources section enables, in registry order."""
    return [kind.build(section, ctx) for kind in SOURCES if kind.enabled(section)]


from logwatch.sources import kinds  # noqa: E402

SOURCES.register(kinds.FILE.name, kinds.FILE)
SOURCES.register(kinds.JOURNAL.name, kinds.JOURNAL)
SOURCES.register(kinds.STDIN.name, kinds.STDIN)

_CLASSES = {"FileTailer": "tail", "JournalSource": "journal", "StdinSource": "stdin"}


def __getattr__(name: str) -> Any:
    # The source classes load on first use: the config loader (and so every logwatchctl
    # command) reads this registry without importing the sources themselves.
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(f"logwatch.sources.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DEFAULT_MAX_LINE", "SOURCES", "FileTailer", "JournalSource", "LineBuffer", "OnChunk",
           "SourceContext", "SourceKey", "SourceType", "StdinSource", "build_sources"]
