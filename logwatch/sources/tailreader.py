"""One file open in the file tailer (tail.py): its read position, partial line and first-line
fingerprint, and the helpers that look at a file's first and last lines."""

from __future__ import annotations

import os

from logwatch.sources import LineBuffer
from logwatch.sources.rotated import FP_LEN, first_line, fp_hex


class _Reader:
    """One open file: read position, partial line and fingerprint."""

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int, max_line: int):
        self.path = path
        self.fd = fd
        self.ino = st.st_ino
        self.dev = st.st_dev
        # Its last write we know of: files rotated after this one (or, copytruncated, after
        # this generation of it) are written after it (see rotated.py).
        self.mtime_ns = st.st_mtime_ns
        self.read_pos = offset
        self.lb = LineBuffer(max_line)
        self.fp = first_line(fd)
        # Started with no first line known (empty, or truncated): files rotated since the
        # previous one are looked for before its first read (_rotated_first). A flag of its
        # own: fingerprint(), which positions() calls, fills in fp at any time.
        self.check_rotated = self.fp is None
        self.wd: int | None = None

    @property
    def line_start(self) -> int:
        """Offset of the first byte not yet delivered (nor skipped as overlong)."""
        return self.read_pos - self.lb.held

    @property
    def fp(self) -> bytes | None:
        """The first line (None until it is complete)."""
        return self._fp

    @fp.setter
    def fp(self, first: bytes | None) -> None:
        # positions() runs for every chunk: hash the first line once, not per call.
        self._fp = first
        self._fp_hex = fp_hex(first)

    def fingerprint(self) -> str:
        if self.fp is None:
            self.fp = first_line(self.fd)
        return self._fp_hex


def _head_line(data: bytes) -> bytes | None:
    """The first line of data read from offset 0, as rotated.first_line() takes it."""
    nl = data.find(b"\n", 0, FP_LEN)
    if nl >= 0:
        return data[: nl + 1]
    return data[:FP_LEN] if len(data) >= FP_LEN else None


def _end_of_last_line(fd: int, size: int, max_line: int) -> int:
    """Offset just after the last newline, so a line being written is not cut in two."""
    if size == 0:
        return 0
    start = max(0, size - max_line - 1)
    tail = os.pread(fd, size - start, start)
    nl = tail.rfind(b"\n")
    if nl >= 0:
        return start + nl + 1
    return 0 if start == 0 else size
