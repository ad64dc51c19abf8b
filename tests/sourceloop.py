"""Drive a log source the way the daemon's loop does (shared by the source tests)."""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import Any


def run_loop(src: Any, cond: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """process() when src's fd is readable, and on a timer only while fileno() is None.
    Return whether cond() became true within timeout."""
    sel = selectors.DefaultSelector()
    fd: int | None = None
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            if time.monotonic() >= deadline:
                return False
            new = src.fileno()
            if new != fd:
                if fd is not None:
                    sel.unregister(fd)
                if new is not None:
                    sel.register(new, selectors.EVENT_READ)
                fd = new
            if fd is None:
                time.sleep(poll)
                src.process()
            elif sel.select(0.02):
                src.process()
        return True
    finally:
        sel.close()


def pump(src: Any, cond: Callable[[], bool], timeout: float = 10.0, poll: float = 0.05) -> None:
    """run_loop(), failing the test when cond() is not reached in time."""
    assert run_loop(src, cond, timeout, poll), "condition not reached in time"
