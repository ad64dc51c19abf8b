"""Minimal sd_notify(3): READY/STOPPING/WATCHDOG messages over $NOTIFY_SOCKET, no dependency."""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_interval"]


def _address() -> str | None:
    """The notify socket address from the environment, in the form socket.connect() takes."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        # Abstract namespace: systemd writes '@', the kernel wants a leading NUL byte.
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    # Unset, empty, or a vsock:/other form we do not speak: behave as if not under systemd.
    return None


def notify(state: str) -> bool:
    """Send one state string (e.g. "READY=1", "WATCHDOG=1"); False when not supervised or on error."""
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # The kernel attaches our credentials, which NotifyAccess=main checks against MAINPID.
            sock.sendto(state.encode("utf-8"), addr)
    except OSError:
        # A missing or full notify socket must never take the daemon down.
        return False
    return True


def watchdog_interval() -> float | None:
    """The WatchdogSec= period in seconds meant for this process, or None; ping at half of it."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        # The variables are inherited by children; only the process they name may ping.
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000
