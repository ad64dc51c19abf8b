"""`logwatchctl status` and the SIGUSR1 summary: a snapshot of the counters and collaborators."""

from __future__ import annotations

import os
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from logwatch import __version__
from logwatch.daemon.factory import Parts
from logwatch.effectors.runner import FAILURES
from logwatch.protocols import FileSource
from logwatch.services.tables import ban_reason

MAX_ERRORS = 20                  # last errors kept for `logwatchctl status`
# Upper bounds (seconds) of the effector write latency histograms (/metrics).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Latency:
    """A fixed-bucket histogram of one effector's write times (counts per bucket, not
    cumulative; the Prometheus collector accumulates)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        self.counts[i] += 1
        self.total += seconds


@dataclass
class BanReasons:
    """Live bans by reason (/metrics), kept as bans come and go through the effect table's
    log step, so that a scrape never walks 100,000 bans."""

    labels: dict[str, str] = field(default_factory=dict)     # net -> its reason label
    counts: Counter = field(default_factory=Counter)

    def reset(self, bans: Any) -> None:
        """Count the bans the engine holds (loaded at start) from scratch."""
        self.labels = {b.net: ban_reason(b) for b in bans}
        self.counts = Counter(self.labels.values())

    def add(self, ban: Any) -> None:
        self.lift(ban.net)          # a ban renewed or grown replaces the old one
        label = self.labels[ban.net] = ban_reason(ban)
        self.counts[label] += 1

    def lift(self, net: str) -> None:
        label = self.labels.pop(net, None)
        if label is not None:
            self.counts[label] -= 1
            if not self.counts[label]:
                del self.counts[label]


@dataclass
class Counters:
    """What `logwatchctl status` reports besides the live grants and bans."""

    started: float
    events: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    newest_event: float | None = None
    errors: deque = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    reloads: int = 0
    latency: dict[str, Latency] = field(default_factory=dict)   # effector -> write times
    selftest_failures: int = 0       # rule self-test failures of rejected reloads
    errors_total: int = 0            # every error, not only the MAX_ERRORS kept
    bans_by_reason: BanReasons = field(default_factory=BanReasons)

    def observe(self, effector: str, seconds: float) -> None:
        """One effector call took that long (daemon/effects.py)."""
        self.latency.setdefault(effector, Latency()).observe(seconds)


def note_newest(c: Counters, event: Any, now: float) -> None:
    """Track the newest log time for `lag`; a line dated in the future beyond the clock
    skew (a bogus 2099) is not believed, or it would pin the lag at 0 for good."""
    from logwatch.engine.core import LOG_CLOCK_SKEW

    try:
        newest = event.time.timestamp()
    except (AttributeError, ValueError, OverflowError, OSError):
        return
    if newest > now + LOG_CLOCK_SKEW:
        return          # the engine counts it (time_future)
    if c.newest_event is None or newest > c.newest_event:
        c.newest_event = newest


def _files(parts: Parts) -> tuple[list[dict[str, Any]], int]:
    """Per followed file: its stats and position; and the lines skipped as too long."""
    files: list[dict[str, Any]] = []
    skipped = 0
    for src in parts.sources:
        offsets = {p.path: p for p in src.positions()} if isinstance(src, FileSource) else {}
        for name, st in src.stats().items():
            skipped += int(st.get("skipped_long", 0) or 0)
            entry: dict[str, Any] = {"path": name, **st}
            pos = offsets.get(os.path.abspath(name)) if name.startswith("/") else None
            if pos is not None:
                entry.update(offset=pos.offset, inode=pos.inode)
            files.append(entry)
    return files, skipped


def snapshot(parts: Parts, c: Counters, lag: Any, now: float, config_path: str | None,
             dry_run: bool) -> dict[str, Any]:
    """The status object (read-only: the lag meter is brought up to date first)."""
    files, skipped = _files(parts)
    parser, engine, watchdog = parts.parser, parts.engine, parts.watchdog
    pstats = parser.stats
    lag.update(now, parts.sources)
    passes = parser.matcher.passes
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": now - c.started,
        "started": c.started,
        "config": config_path,
        "dry_run": dry_run,
        "lines_read": pstats.lines,
        "lines_skipped": skipped,
        "lines_unparsed": pstats.unknown_framing,
        "lines_too_long": pstats.too_long,
        "rules_over_budget": dict(pstats.over_budget),
        "rules_quarantined": parser.quarantine_left(),
        "matcher": f"{parser.matcher.name} ({passes} pass{'es' if passes != 1 else ''})",
        "events": dict(c.events),
        "actions": dict(c.actions),
        "grants": len(engine.grants),
        "bans": len(engine.bans),
        "files": files,
        "newest_event": c.newest_event,
        "lag": lag.lag(now),
        "lag_bytes": lag.behind,
        "log_time": engine.log_time_counts(),
        "watchdog_kills": watchdog.stats().get("kills", 0) if watchdog is not None else None,
        "reloads": c.reloads,
        "errors": list(c.errors),
        # For /metrics and the status page (services/web.py).
        "rules": dict(pstats.by_rule),
        "latency": {k: {"counts": v.counts, "sum": v.total} for k, v in c.latency.items()},
        "command_failures": dict(FAILURES),
        "selftest_failures": c.selftest_failures,
        "errors_total": c.errors_total,
        "firewall_backend": getattr(parts.firewall, "backend", "none"),
        "bans_by_reason": dict(c.bans_by_reason.counts),
        "accounting": parts.accounting.stats() if parts.accounting is not None else None,
        # Account risk (engine/accounts.py): accounts followed, suspensions, counters.
        "risk": (engine.accounts.stats() if getattr(engine, "accounts", None) is not None
                 and engine.accounts.settings.enabled else None),
    }


def summary(st: dict[str, Any]) -> str:
    """The one-line SIGUSR1 summary of a status snapshot."""
    events = ",".join(f"{k}:{v}" for k, v in sorted(st["events"].items())) or "none"
    return (f"action=summary uptime={st['uptime']:.0f} lines_read={st['lines_read']} "
            f"events={events} grants={st['grants']} bans={st['bans']} "
            f"lag={'-' if st['lag'] is None else format(st['lag'], '.1f')} "
            f"errors={len(st['errors'])}")
