"""A small inotify binding over ctypes and libc (no third-party module, so the .deb has it).

Only what the tailer and the whitelist watcher need: a non-blocking, close-on-exec inotify fd,
add_watch/rm_watch, and read() decoding the kernel's ``struct inotify_event`` records.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import struct
from dataclasses import dataclass


class Mask(enum.IntFlag):
    """The event bits of <sys/inotify.h> we use (values are the kernel ABI)."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    ISDIR = 0x40000000


_IN_CLOEXEC = os.O_CLOEXEC
_IN_NONBLOCK = os.O_NONBLOCK
_HEADER = struct.Struct("iIII")      # wd, mask, cookie, len (of the NUL-padded name)
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class InotifyEvent:
    """One decoded event; name is the entry in a watched directory ("" for the watched inode)."""

    wd: int
    mask: int
    cookie: int
    name: str


def _load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    for fn, args in (("inotify_init1", [ctypes.c_int]),
                     ("inotify_add_watch", [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]),
                     ("inotify_rm_watch", [ctypes.c_int, ctypes.c_int])):
        getattr(libc, fn).argtypes = args
        getattr(libc, fn).restype = ctypes.c_int
    return libc


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = _load_libc()
    return _libc


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def decode(data: bytes) -> list[InotifyEvent]:
    """Decode a buffer read from an inotify fd (whole records only, as the kernel returns)."""
    events = []
    pos = 0
    size = _HEADER.size
    while pos + size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, pos)
        raw = data[pos + size: pos + size + length]
        name = os.fsdecode(raw.split(b"\0", 1)[0])
        events.append(InotifyEvent(wd, mask, cookie, name))
        pos += size + length
    return events


class Inotify:
    """A non-blocking inotify instance (raises OSError when the kernel refuses one)."""

    def __init__(self) -> None:
        self._fd = _check(_lib().inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch path (a file or directory) for mask; returns the watch descriptor."""
        return _check(_lib().inotify_add_watch(self._fd, os.fsencode(path), int(mask)),
                      f"inotify_add_watch {path}")

    def rm_watch(self, wd: int) -> None:
        _check(_lib().inotify_rm_watch(self._fd, wd), "inotify_rm_watch")

    def read(self) -> list[InotifyEvent]:
        """Every event queued now, without blocking ([] when there is none)."""
        out: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return out
            if not data:
                return out
            out.extend(decode(data))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
