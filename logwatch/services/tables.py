"""Paged, searchable tables of the engine's bans, grants and offenders (the status page's
/api/table, the control socket's "table" command), and the live bans counted by reason.

Read-only and bounded: a page is at most MAX_LIMIT rows whatever the engine holds; the search
is a plain substring test (no regex from a client), done before the sort so that a narrow
search over 100,000 bans sorts only its matches."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection
from typing import Any

MAX_LIMIT = 500
MAX_QUERY = 100
# Offenders ranked per request: the most recently seen this many (a request runs on the loop
# that reads the logs; ranking 100,000 takes it ~130 ms, 10,000 ~15 ms, this many ~3 ms).
# `logwatchctl offenders` still ranks them all.
OFFENDER_SCAN = 2_000


def ban_reason(ban: Any) -> str:
    """The one reason label of a ban: its most counted event kind, else its source (manual)."""
    reason = ban.reason
    if reason:
        return max(reason, key=reason.get)
    return ban.source


def _ban_row(b: Any) -> dict[str, Any]:
    return {"ip": b.net, "reason": ban_reason(b), "score": b.score, "since": b.since,
            "expires": b.expires_at, "offences": b.offences, "source": b.source}


def _grant_row(g: Any) -> dict[str, Any]:
    return {"ip": g.ip, "user": g.user, "service": g.service, "since": g.granted_at,
            "expires": g.expires_at}


def _ban_has(q: str, b: Any) -> bool:
    # Nets are stored lower-case (normalised); reasons and sources are our own words.
    return q in b.net or q in b.source or any(q in k for k in b.reason)


def _grant_has(q: str, g: Any) -> bool:
    return q in g.ip or q in (g.user or "").lower() or q in (g.service or "")


def _offender_has(q: str, v: dict[str, Any]) -> bool:
    return q in v["ip"] or any(q in k for k in v["reasons"])


def _page(items: Collection[Any], q: str, has: Callable[[str, Any], bool],
          key: Callable[[Any], Any], offset: int, limit: int) -> tuple[list[Any], int]:
    """The page [offset, offset+limit) of the items matching q, newest (largest key) first
    (no copy of the items without a query: a heap of offset+limit over them)."""
    if q:
        items = [i for i in items if has(q, i)]
    top = heapq.nlargest(offset + limit, items, key=key)
    return top[offset:], len(items)


class PageCache:
    """Pages without a search, kept a while: the newest bans until they change (their number,
    first or last key: a dict keeps insertion order) or BANS_TTL passes (a ban renewed in
    place); the offenders' ranking OFFENDERS_TTL (their scores move with every line). A page
    reloaded every 100 ms must not heap 100,000 bans, or rank offenders, each time."""

    BANS_TTL = 5.0
    OFFENDERS_TTL = 2.0
    MAX_PAGES = 16

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_pages: int = MAX_PAGES) -> None:
        self.clock = clock          # a duration, not a time of day
        self.max_pages = max_pages
        self.entries: dict[tuple[Any, ...], tuple[float, Any]] = {}

    def get(self, key: tuple[Any, ...], ttl: float, compute: Callable[[], Any]) -> Any:
        now = self.clock()
        hit = self.entries.get(key)
        # A clock set back (the daemon's is a time of day) must not keep an entry for ever.
        if hit is not None and 0 <= now - hit[0] <= ttl:
            return hit[1]
        if len(self.entries) >= self.max_pages:
            self.entries.clear()
        value = compute()
        self.entries[key] = (now, value)
        return value

    def bans(self, bans: dict[str, Any], offset: int, limit: int,
             compute: Callable[[], Any]) -> Any:
        first, last = (next(iter(bans)), next(reversed(bans))) if bans else (None, None)
        return self.get(("bans", id(bans), len(bans), first, last, offset, limit),
                        self.BANS_TTL, compute)


def _request(req: dict[str, Any]) -> tuple[str, int, int] | str:
    """(lower-case query, offset, limit) of a request, or the error message."""
    q, offset, limit = req.get("q", ""), req.get("offset", 0), req.get("limit", 50)
    if not isinstance(q, str) or len(q) > MAX_QUERY:
        return f'"q" must be a string of at most {MAX_QUERY} characters'
    for name, value in (("offset", offset), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f'"{name}" must be a non-negative integer'
    if offset > 1_000_000:
        return '"offset" too large'
    return q.strip().lower(), offset, min(max(limit, 1), MAX_LIMIT)


def answer_table(engine: Any, req: dict[str, Any],
                 cache: PageCache | None = None) -> dict[str, Any]:
    """{"cmd": "table", "table": "bans"|"grants"|"offenders", "q", "offset", "limit"}."""
    parsed = _request(req)
    if isinstance(parsed, str):
        return {"ok": False, "error": f"table: {parsed}"}
    q, offset, limit = parsed
    table = req.get("table")
    if table == "bans":
        def compute() -> tuple[list[Any], int]:
            return _page(engine.bans.values(), q, _ban_has, lambda b: b.since, offset, limit)

        page, total = (cache.bans(engine.bans, offset, limit, compute) if cache and not q
                       else compute())
        rows = [_ban_row(b) for b in page]
    elif table == "grants":
        page, total = _page(engine.grants.values(), q, _grant_has, lambda g: g.granted_at,
                            offset, limit)
        rows = [_grant_row(g) for g in page]
    elif table == "offenders":
        def rank() -> tuple[list[Any], int]:
            views, ranked = engine.offenders(None if q else offset + limit, scan=OFFENDER_SCAN)
            page, total = _page(views, q, _offender_has, lambda v: v["score"], offset, limit)
            return page, total if q else ranked

        rows, total = (cache.get(("offenders", id(engine), offset, limit),
                                 PageCache.OFFENDERS_TTL, rank) if cache and not q else rank())
    else:
        return {"ok": False, "error": 'table: "table" must be bans, grants or offenders'}
    return {"ok": True, "table": table, "rows": rows, "total": total, "offset": offset,
            "limit": limit, **({"scanned": OFFENDER_SCAN} if table == "offenders" else {})}
