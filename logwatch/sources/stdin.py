"""Read log lines from standard input (``logwatchd --stdin``), e.g. piped from a syslog daemon."""

from __future__ import annotations

import logging
import os
import sys
from typing import BinaryIO

from . import DEFAULT_MAX_LINE, LineBuffer, OnChunk

LOG = logging.getLogger("logwatchd.sources.stdin")

READ_SIZE = 1 << 20


class StdinSource:
    """Non-blocking reader of a byte stream (fd 0 by default); ``eof`` turns True at its end."""

    name = "stdin"

    def __init__(self, on_chunk: OnChunk, stream: BinaryIO | None = None, *,
                 max_line: int = DEFAULT_MAX_LINE, log: logging.Logger | None = None) -> None:
        self.on_chunk = on_chunk
        self.log = log or LOG
        self._fd = (stream if stream is not None else sys.stdin.buffer).fileno()
        os.set_blocking(self._fd, False)
        self._lb = LineBuffer(max_line)
        self.eof = False
        self._bytes = 0

    def fileno(self) -> int | None:
        return None if self.eof else self._fd

    def process(self) -> None:
        """Read what is available (up to a few MB) and deliver the complete lines."""
        if self.eof:
            return
        parts = []
        total = 0
        while total < 4 * READ_SIZE:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self.log.warning("action=read-error source=stdin error=%s", exc)
                data = b""
            if not data:
                self.eof = True
                break
            total += len(data)
            out = self._lb.feed(data)
            if out:
                parts.append(out)
        if self.eof:
            # The last line may lack its newline; it is complete now that the stream ended.
            parts.append(self._lb.flush())
            self.log.info("action=eof source=stdin lines=%d", self._lb.lines)
        chunk = b"".join(parts)
        if chunk:
            self._bytes += len(chunk)
            self.on_chunk(self.name, chunk)

    def save_positions(self) -> None:
        """Nothing to persist for a pipe."""

    def stats(self) -> dict[str, dict[str, int]]:
        return {self.name: {"lines": self._lb.lines, "bytes": self._bytes,
                            "skipped_long": self._lb.skipped_long}}

    def close(self) -> None:
        """The daemon does not own fd 0; leave it open."""
