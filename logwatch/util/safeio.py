"""Reading files the admin (or an attacker) points us at: regular files only, never blocking,
size-capped; and creating private files whatever the umask."""

from __future__ import annotations

import os
import stat

CONFIG_MAX_BYTES = 1 << 20          # a config is a few KiB; 1 MiB is far beyond any real one
RULES_MAX_BYTES = 4 << 20           # per rules file
WHITELIST_MAX_BYTES = 64 << 20      # a whitelist may list many networks


class UnsafeFileError(OSError):
    """Not a regular file, or larger than the cap: refused before reading it."""


def read_capped(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; UnsafeFileError otherwise.

    O_NONBLOCK: opening a FIFO must not block the loop (it is refused after the fstat)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{os.fspath(path)}: not a regular file")
        if st.st_size > limit:
            raise UnsafeFileError(f"{os.fspath(path)}: {st.st_size} bytes, more than the "
                                  f"{limit} allowed")
        chunks = []
        total = 0
        while True:                   # the file may grow while we read: stop at the cap
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UnsafeFileError(f"{os.fspath(path)}: more than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def make_private(path: str | os.PathLike[str], mode: int = 0o600) -> None:
    """Create path if absent and set its mode to `mode` (an old 0644 file is tightened too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)   # O_CREAT's mode is filtered by the umask; fchmod is not
    finally:
        os.close(fd)


def tighten(path: str | os.PathLike[str], mode: int = 0o600) -> None:
    """Set the mode of an existing file; a missing one is fine."""
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass
