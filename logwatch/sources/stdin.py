"""Read log lines from standard input (``logwatchd --stdin``): a pipe from a syslog daemon, or a
regular file (``logwatchd --stdin < old.log``) read to its end at full speed."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import stat
import sys
from typing import BinaryIO

from logwatch.sources import DEFAULT_MAX_LINE, LineBuffer, OnChunk

LOG = logging.getLogger("logwatchd.sources.stdin")

READ_SIZE = 1 << 20
# Bytes read per process() call: big enough that per-chunk costs vanish, small enough that the
# loop still serves signals, timers and the control socket between chunks of a big file, and
# that the parser's passes over a chunk stay in the CPU cache (4 MiB parsed 15-25% slower).
CHUNK_SIZE = 1 << 19


def pollable(fd: int) -> bool:
    """Whether epoll accepts the fd; it refuses regular files, directories and /dev/null with
    EPERM, whose reads never block."""
    if not hasattr(select, "epoll"):
        return not stat.S_ISREG(os.fstat(fd).st_mode)
    probe = select.epoll()
    try:
        probe.register(fd, select.EPOLLIN)
    except PermissionError:
        return False
    finally:
        probe.close()
    return True


def _widen_pipe(fd: int) -> None:
    """Give a pipe a 1 MiB buffer (Linux's default is 64 KiB): a writer far ahead of us (a big
    log piped in) then hands over 1 MiB per read and per parsed chunk, not 64 KiB."""
    if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < READ_SIZE:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_SIZE)
    except OSError:               # above /proc/sys/fs/pipe-max-size for an unprivileged user
        pass


class StdinSource:
    """Non-blocking reader of a byte stream (fd 0 by default); ``eof`` turns True at its end.

    A pipe is watched through ``fileno()``; a regular file has no fd to wait on, it is
    ``pending`` (always readable) until its end.
    """

    name = "stdin"

    def __init__(self, on_chunk: OnChunk, stream: BinaryIO | None = None, *,
                 max_line: int = DEFAULT_MAX_LINE, log: logging.Logger | None = None) -> None:
        self.on_chunk = on_chunk
        self.log = log or LOG
        self._fd = (stream if stream is not None else sys.stdin.buffer).fileno()
        os.set_blocking(self._fd, False)
        self._pollable = pollable(self._fd)
        _widen_pipe(self._fd)
        self._lb = LineBuffer(max_line)
        self.eof = False
        self._bytes = 0

    def fileno(self) -> int | None:
        return None if self.eof or not self._pollable else self._fd

    @property
    def pending(self) -> bool:
        """True while input is readable without waiting: a regular file not yet at its end."""
        return not self.eof and not self._pollable

    def process(self) -> None:
        """Read what is available (up to a few MB) and deliver the complete lines."""
        if self.eof:
            return
        parts = []
        total = 0
        while total < CHUNK_SIZE:
            try:
                data = os.read(self._fd, CHUNK_SIZE - total)
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
        """Nothing to persist: a pipe cannot be re-read, and a file on stdin has no name."""

    def stats(self) -> dict[str, dict[str, int]]:
        return {self.name: {"lines": self._lb.lines, "bytes": self._bytes,
                            "skipped_long": self._lb.skipped_long}}

    def close(self) -> None:
        """The daemon does not own fd 0; leave it open."""
