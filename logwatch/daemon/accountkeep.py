"""Account upkeep on the loop: each minute the finished minutes' counts and the changed account
windows go to the store (old buckets and windows pruned); at stop, all of them."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from logwatch.daemon.factory import Parts

log = logging.getLogger("logwatchd.daemon")

COUNTS_INTERVAL = 60.0           # counts are written once a minute, after the minute ends


class AccountKeeper:
    """The loop's "counts" timer: MinuteCounts.drain() and the account windows into the store."""

    def __init__(self, parts: Parts, loop: Any, window: Callable[[], float],
                 error: Callable[[str], None]) -> None:
        self.parts = parts
        self.loop = loop
        self.window = window         # accounting.window of the running config
        self.error = error
        loop.on_timer("counts", self._on_timer)

    def schedule(self, now: float) -> None:
        # A few seconds into the next minute: that minute's lines have had time to arrive.
        self.loop.call_at("counts", now - now % 60 + COUNTS_INTERVAL + 5)

    def _on_timer(self, now: float) -> None:
        self.flush(now)
        self.schedule(now)

    def flush(self, now: float, final: bool = False) -> None:
        """Write the counts of the minutes that ended (every minute at the stop) and the
        account windows changed since the last flush."""
        engine = self.parts.engine
        rows = engine.counts.drain(math.inf if final else now)
        windows = engine.accounts.account_rows(dirty=True)
        if not rows and not windows:
            return
        try:
            with self.parts.store.transaction():
                self.parts.store.put_counts(rows, now)
                self.parts.store.put_account_windows(windows, now - self.window())
        except Exception as exc:     # counts are statistics: lost, never a crash
            self.error(f"counts: {exc}")
            log.error("action=counts-error error=%s rows=%d", exc, len(rows))
