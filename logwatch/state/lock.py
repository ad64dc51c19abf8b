"""One logwatchd per state directory: an exclusive flock taken before anything else is touched."""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = "lock"


class StateLockError(Exception):
    """Another process holds the state directory (or the lock file cannot be made)."""


class StateLock:
    """flock(LOCK_EX) on <state_dir>/lock, held for the life of the process (the kernel drops
    it when we exit, even on kill -9, so a stale lock never blocks a restart)."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateLockError(f"{self.path}: cannot open the lock file: {exc}") from exc
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateLockError(f"state directory {os.path.dirname(self.path)} is in use by "
                                 f"{who} (another logwatchd?); refusing to start") from None
        except OSError as exc:
            os.close(fd)
            raise StateLockError(f"{self.path}: cannot lock: {exc}") from exc
        # The pid is informational (for the message above); the flock is what counts.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
