"""The one source of wall-clock time. Everything that needs "now" takes a Clock (a callable
returning seconds since the epoch) and defaults to wall(); tests inject a fake one."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def wall() -> float:
    """Seconds since the epoch, now."""
    return time.time()


def local(ts: float) -> time.struct_time:
    """The local broken-down time of ts (never "now": time.localtime() is banned elsewhere)."""
    return time.localtime(ts)
