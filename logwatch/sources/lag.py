"""How far the reader is behind what is written to the log files (`logwatchctl status` lag).

Lag is not "time since the last event": a quiet log read to its end has lag 0. The daemon
compares each followed file's size with the offset it has delivered, once a second and at each
status query; while bytes are unread, the lag is the time since it last had read everything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def unread_bytes(sources: Iterable[Any]) -> int | None:
    """Bytes written to the followed files but not read yet; None without any file source."""
    total: int | None = None
    for src in sources:
        if not hasattr(src, "positions"):
            continue        # journal and stdin: nothing to compare with
        total = total or 0
        for pos in src.positions():
            try:
                st = os.stat(pos.path)
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (pos.inode, pos.dev):
                total += max(0, st.st_size - pos.offset)
            else:           # rotated: the new file is all unread
                total += st.st_size
    return total


@dataclass
class LagMeter:
    """Remembers when the reader last had everything; lag() is the time since then."""

    started: float
    caught_up_at: float | None = None
    behind: int | None = None

    def update(self, now: float, sources: Iterable[Any]) -> None:
        self.behind = unread_bytes(sources)
        if not self.behind:
            self.caught_up_at = now

    def lag(self, now: float) -> float | None:
        """Seconds behind the log (0 at the end of every file); None without file sources."""
        if self.behind is None:
            return None
        if self.behind == 0:
            return 0.0
        return max(0.0, now - (self.caught_up_at if self.caught_up_at is not None else self.started))
