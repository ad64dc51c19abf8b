"""Log time rules: which time a line counts at (its own, unless too far ahead of the clock).
A mixin of Engine (logwatch.engine.core)."""

from __future__ import annotations

from logwatch.engine.state import EngineState
from logwatch.parsing.events import Event

# A line may be dated this far ahead of our clock (another host's syslog, a clock step) and keep
# its time; beyond that it is taken as "now" and counted: a bogus date must not pin anything.
LOG_CLOCK_SKEW = 300.0


class LogTime(EngineState):
    """event_time() and its counters (state lives in Engine)."""

    def event_time(self, event: Event, now: float | None = None) -> float:
        """The line's own time; one more than LOG_CLOCK_SKEW ahead of the clock (or unreadable)
        is taken as now and counted. Old times stay: each caller has its own age limit."""
        if now is None:
            now = self.clock()
        try:
            when = event.time.timestamp()
        except (AttributeError, ValueError, OverflowError, OSError):
            self._counters["time_invalid"] += 1
            return now
        if not when <= now + LOG_CLOCK_SKEW:       # also NaN
            self._counters["time_future"] += 1
            return now
        return when

    def log_time_counts(self) -> dict[str, int]:
        """Lines whose own time was not used as is (see event_time), for logwatchctl status."""
        c = self._counters
        return {"future": c["time_future"], "unreadable": c["time_invalid"],
                "stale_logins": c["grants_stale"], "stale_failures": c["ignored_stale"]}
