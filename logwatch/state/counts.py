"""Counts over time in the store: minute buckets kept a day, hour buckets a month; each
minute row is also added to its hour when written, so both resolutions are always there.
Portable SQL only (PostgreSQL accepts every statement)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MINUTE, HOUR = 60, 3600
KEEP = {MINUTE: 86400, HOUR: 31 * 86400}      # step -> how long its buckets are kept
MAX_POINTS = 10_000                           # a query answers at most this many buckets

_UPSERT = ("INSERT INTO counts (series, step, t, value) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (series, step, t) DO UPDATE SET value = counts.value + excluded.value")


def add_counts(db: Any, rows: Iterable[tuple[str, int, float]]) -> None:
    """Add minute rows (series, minute start, value) to their minute and hour buckets."""
    params = []
    for series, t, value in rows:
        t = int(t)
        params.append((series, MINUTE, t - t % MINUTE, value))
        params.append((series, HOUR, t - t % HOUR, value))
    if params:
        db.executemany(_UPSERT, params)


def prune_counts(db: Any, now: float) -> None:
    """Drop buckets older than their resolution's keep time."""
    for step, keep in KEEP.items():
        db.execute("DELETE FROM counts WHERE step = ? AND t < ?", (step, int(now - keep)))


def counts(db: Any, series: str, since: float, until: float, step: int,
           now: float | None = None) -> list[tuple[int, float]]:
    """The series from `since` to `until` in buckets of `step` seconds (rounded up to a
    whole minute, or a whole hour when minutes are no longer kept for `since`), every
    bucket present (0 when nothing happened): [(bucket start, sum), ...]."""
    if not until > since:
        return []
    step = max(MINUTE, int(step))
    base = MINUTE
    if step >= HOUR or (now is not None and since < now - KEEP[MINUTE]):
        base, step = HOUR, max(HOUR, step - step % HOUR)
    step -= step % base
    first = int(since) - int(since) % step
    if (until - first) / step > MAX_POINTS:
        raise ValueError(f"too many points: ({until} - {since}) / {step} > {MAX_POINTS}")
    out = {t: 0.0 for t in range(first, int(until), step)}
    rows = db.execute("SELECT t, value FROM counts WHERE series = ? AND step = ? AND t >= ? "
                      "AND t < ?", (series, base, first, int(until)))
    for t, value in rows:
        bucket = t - (t - first) % step
        if bucket in out:
            out[bucket] += value
    return sorted(out.items())


def series_names(db: Any, prefix: str = "") -> list[str]:
    """The series the store holds (hour buckets: the longest kept), optionally by prefix."""
    rows = db.execute("SELECT DISTINCT series FROM counts WHERE step = ? ORDER BY series",
                      (HOUR,))
    return [r[0] for r in rows if r[0].startswith(prefix)]
