"""Time series of the daemon's own counters for the status page, in the store's counts over
time (state/counts.py, the `counts` table the account risk part writes its message counts
to: minute buckets kept a day, hour buckets a month).

Nothing on the log side writes them: once a minute the recorder samples cumulative counters
(from the status snapshot, through the SAMPLERS registry) and stores their increase as that
minute's row. Another part adds a series with one sampler, status -> {series name: cumulative
count}, registered in SAMPLERS (HACKING, "Metrics and the status page"); a part that counts
per minute itself (accounting's "messages", "sent", "received", "sender:ID") writes its rows
with Store.put_counts and the page reads them the same way."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logwatch.registry import Registry
from logwatch.state.counts import HOUR, MINUTE

log = logging.getLogger("logwatchd.series")

MAX_SERIES = 50                                       # a read answers at most this many

Sampler = Callable[[dict[str, Any]], dict[str, float]]
SAMPLERS: Registry[Sampler] = Registry("series sampler")


def _core(status: dict[str, Any]) -> dict[str, float]:
    """Events by kind, bans, unbans and grants (cumulative since the daemon started)."""
    actions = status.get("actions", {})
    out = {f"events.{kind}": float(n) for kind, n in status.get("events", {}).items()}
    out.update(bans=float(actions.get("ban", 0)), unbans=float(actions.get("unban", 0)),
               grants=float(actions.get("grant", 0)))
    return out


SAMPLERS.register("core", _core)


@dataclass(frozen=True)
class Span:
    """A plot range: how far back, and the step of its points (minute buckets are read up
    to a day back, hour buckets beyond: state/counts.py)."""

    seconds: int
    point: int


SPANS = {"hour": Span(HOUR, MINUTE), "day": Span(86400, 5 * MINUTE),
         "month": Span(30 * 86400, 6 * HOUR)}


def sample(status: dict[str, Any]) -> dict[str, float]:
    """Every registered sampler's counts; a failing sampler is skipped (logged)."""
    out: dict[str, float] = {}
    for sampler in SAMPLERS:
        try:
            out.update(sampler(status))
        except Exception:       # one broken sampler must not stop the others
            log.exception("action=series-sample-error")
    return out


def increases(before: dict[str, float], now: dict[str, float]) -> dict[str, float]:
    """How much each counter grew (a counter that went down restarted: its new value)."""
    out = {}
    for name, value in now.items():
        grown = value - before.get(name, 0.0)
        if grown < 0:
            grown = value
        if grown > 0:
            out[name] = grown
    return out


def rows(grown: dict[str, float], when: float) -> list[tuple[str, int, float]]:
    """The minute rows (series, minute start, value) adding `grown` at time `when` (the
    store adds each to its hour too)."""
    t = int(when)
    return [(name, t - t % MINUTE, value) for name, value in grown.items()]


class SeriesRecorder:
    """Samples the counters on the loop's "series" timer and adds their growth to the store."""

    def __init__(self, store: Callable[[], Any], status: Callable[[], dict[str, Any]],
                 loop: Any, error: Callable[[str], None]) -> None:
        self.store, self.status, self.loop, self.error = store, status, loop, error
        self.last: dict[str, float] | None = None
        loop.on_timer("series", self._on_timer)

    def schedule(self, now: float) -> None:
        self.last = sample(self.status())
        self.loop.call_at("series", now - now % MINUTE + MINUTE)

    def _on_timer(self, now: float) -> None:
        self.flush(now)
        self.loop.call_at("series", now - now % MINUTE + MINUTE)

    def flush(self, now: float) -> None:
        """Store what grew since the last flush, stamped a second back (the minute that
        ended); the store prunes buckets past their keep as it writes."""
        if self.last is None:
            return          # never scheduled: the daemon did not get that far
        current = sample(self.status())
        grown = increases(self.last, current)
        self.last = current
        if not grown:
            return
        try:
            self.store().put_counts(rows(grown, now - 1), now)
        except sqlite3.Error as exc:     # a lost minute of a plot; the log side goes on
            self.error(f"series: {exc}")
            log.error("action=series-error error=%s", exc)


def read(store: Any, names: list[str], span_name: str, now: float) -> dict[str, Any]:
    """{"step", "start", "points", "series": {name: [count per point]}} of the last span,
    zeros where nothing was counted; KeyError for an unknown span."""
    span = SPANS[span_name]
    points = span.seconds // span.point
    end = int(now) - int(now) % span.point + span.point
    start = end - points * span.point
    series = {name: [v for _, v in store.counts(name, start, end, span.point, now)]
              for name in names[:MAX_SERIES]}
    return {"step": span.point, "start": start, "points": points, "series": series}


def names(store: Any, prefix: str = "") -> list[str]:
    return store.count_series(prefix)


def top(store: Any, prefix: str, span_name: str, now: float, limit: int) -> list[list[Any]]:
    """[[series, sum over the span], ...] of the largest series named prefix + something
    (accounting's "sender:ID"), in one grouped query (minute buckets for the last hour, hour
    buckets beyond). LIKE, not a range: PostgreSQL's collations do not order by bytes."""
    if any(c in prefix for c in "%_\\"):
        raise ValueError("a prefix without % _ or \\")
    span = SPANS[span_name]
    step = MINUTE if span.seconds <= HOUR else HOUR
    start = int(now - span.seconds)
    rows = store.db.execute(
        "SELECT series, SUM(value) FROM counts WHERE step = ? AND t >= ? AND series LIKE ? "
        "GROUP BY series ORDER BY SUM(value) DESC, series LIMIT ?",
        (step, start - start % step, prefix + "%", limit))
    return [[name, float(value)] for name, value in rows]


def answer(store: Any, req: dict[str, Any], now: float) -> dict[str, Any]:
    """The "series" command: {"span": hour|day|month, "names": [...] or "prefix": "events."},
    or {"span", "top": "sender:", "limit": N} for the largest series of a prefix."""
    span = req.get("span", "hour")
    if span not in SPANS:
        return {"ok": False, "error": f"series: \"span\" must be one of {', '.join(SPANS)}"}
    if isinstance(req.get("top"), str):
        limit = req.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 100:
            return {"ok": False, "error": 'series: "limit" must be 1..100'}
        try:
            return {"ok": True, "top": top(store, req["top"], span, now, limit)}
        except (ValueError, sqlite3.Error) as exc:
            return {"ok": False, "error": f"series: {exc}"}
    wanted = req.get("names")
    prefix = req.get("prefix")
    if isinstance(prefix, str):
        wanted = names(store, prefix)
    if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
        return {"ok": False, "error": 'series: "names" (a list of strings) or "prefix" needed'}
    try:
        return {"ok": True, **read(store, wanted, span, now)}
    except sqlite3.Error as exc:
        return {"ok": False, "error": f"series: {exc}"}
