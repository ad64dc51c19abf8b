"""The state engine: relay grants after logins, offender scoring and bans. Pure: no I/O, clock injected.

The engine only returns effects (logwatch.engine.model); the daemon applies them to the Postfix map,
the firewall and the store. Grants and scores run on the line's own time (see event_time for the
clock-skew rules); bans and expiries on the injected clock, the time the daemon acts.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from logwatch.clock import Clock, wall
from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.accounts import LOG_CLOCK_SKEW as ACCOUNT_CLOCK_SKEW
from logwatch.engine.accounts import AccountBook, RiskSettings
from logwatch.engine.bans import BanBook
from logwatch.engine.counts import MinuteCounts
from logwatch.engine.fleet import FleetBans
from logwatch.engine.grants import GrantBook
from logwatch.engine.logtime import LOG_CLOCK_SKEW, LogTime
from logwatch.engine.model import Ban, BanLifted, Effect, Grant, GrantRevoked
from logwatch.engine.offenders import (
    _BIAS,
    PREFIX_FALLBACK,
    OffenderScoring,
    _newest_time,
)
from logwatch.engine.queries import EngineQueries
from logwatch.engine.whitelist import LOOPBACK, NetSet, Whitelist
from logwatch.parsing.events import AUTH, LOGIN, USER_UNKNOWN, Event, normalize_ip

PRUNE_INTERVAL = 60.0        # seconds between sweeps that only forget stale offenders
_KEEP = object()             # reconfigure(): "leave this setting as it is"
__all__ = ["LOG_CLOCK_SKEW", "PREFIX_FALLBACK", "PRUNE_INTERVAL", "Engine"]


class Engine(GrantBook, BanBook, OffenderScoring, LogTime, EngineQueries, FleetBans):
    """Grants, bans and offender scores; every method returns the effects the daemon must apply."""

    def __init__(
        self,
        relay: RelayConfig,
        bans: BanConfig,
        *,
        whitelist: Whitelist | None = None,
        mynetworks: Sequence[str] = (),
        own_addresses: Sequence[str] = (),
        clock: Clock = wall,
        accounting: Any = None,
    ) -> None:
        self.clock = clock
        # Account risk per SASL ID and counts over time (accounting.*; off when not enabled).
        self.accounts = AccountBook(RiskSettings(enabled=False), clock)
        self.counts = MinuteCounts()
        self.configure_accounting(accounting)
        self.grants: dict[str, Grant] = {}
        self.bans: dict[str, Ban] = {}
        self.whitelist = whitelist if whitelist is not None else Whitelist()
        self._mynetworks = NetSet(mynetworks)
        self._own = NetSet(own_addresses)
        # offender key -> packed hits, least recently seen first (popitem(last=False) evicts).
        self._tracked: OrderedDict[int, int] = OrderedDict()
        self._epoch_ms = round(clock() * 1000)
        self._last_prune = clock()
        # ban history, for growth and permanent bans: net -> [bans so far, time of the last]
        self._history: OrderedDict[str, list[float]] = OrderedDict()
        self._kind_index: dict[str, int] = {}
        self._kind_names: list[str] = []
        # Expiry heap of (expires_at, seq, "g"|"b", key); stale entries are skipped lazily.
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._counters: dict[str, int] = dict.fromkeys(
            ("events", "grants_added", "grants_refreshed", "grants_excluded", "grants_expired",
             "bans_added", "bans_lifted", "bans_expired", "ignored_banned", "ignored_protected",
             "ignored_invalid", "evicted", "pruned", "time_future", "time_invalid",
             "grants_stale", "ignored_stale", "bans_narrowed"), 0)
        self._configure(relay, bans)
        self._rebuild_protected()

    # -- configuration -------------------------------------------------------

    def _configure(self, relay: RelayConfig, bans: BanConfig) -> None:
        self.relay = relay
        self.bancfg = bans
        self._services = frozenset(s.lower() for s in relay.services)
        self._exclude = NetSet(relay.exclude)
        self._no_grant = self._mynetworks | self._exclude
        self._uu = self._kind(USER_UNKNOWN)      # registered first: always a valid index
        self._weights: dict[int, float] = {}
        for kind, weight in bans.weights.items():
            index = self._kind(kind)
            # Only _KIND_BITS worth of kinds fit in a packed hit; more are ignored, not crashed on.
            if weight and weight > 0 and index >= 0:
                self._weights[index] = float(weight)
        self._v4_prefix = bans.ipv4_prefix
        self._v6_prefix = bans.ipv6_prefix
        self._v4_mask = ((1 << 32) - 1) ^ ((1 << (32 - bans.ipv4_prefix)) - 1)
        self._v6_mask = ((1 << 128) - 1) ^ ((1 << (128 - bans.ipv6_prefix)) - 1)
        self._find_ms = int(bans.findtime * 1000)
        self._distinct_on = bans.distinct_users > 0 and bans.distinct_window > 0
        self._distinct_ms = int(bans.distinct_window * 1000) if self._distinct_on else 0
        self._horizon_ms = max(self._find_ms, self._distinct_ms)

    def _rebuild_protected(self) -> None:
        self._protected = self.whitelist.nets | self._mynetworks | self._own | NetSet(LOOPBACK)
        self._reindex_bans()

    def reconfigure(self, relay: RelayConfig, bans: BanConfig, mynetworks=_KEEP,
                    own_addresses=_KEEP) -> list[Effect]:
        """Apply new settings (SIGHUP); grants, bans and scores stay (scores reset if prefixes change)."""
        old_prefixes = (self._v4_prefix, self._v6_prefix)
        if mynetworks is not _KEEP:
            self._mynetworks = NetSet(mynetworks)
        if own_addresses is not _KEEP:
            self._own = NetSet(own_addresses)
        self._configure(relay, bans)
        if old_prefixes != (self._v4_prefix, self._v6_prefix):
            # Keys of another prefix length mean nothing now; counting again is the safe choice.
            self._tracked.clear()
        while len(self._tracked) > max(bans.max_tracked, 0):
            self._tracked.popitem(last=False)
            self._counters["evicted"] += 1
        self._rebuild_protected()
        return self._drop_excluded_grants() + self._lift_protected_bans()

    def configure_accounting(self, accounting: Any) -> list[Effect]:
        """Apply the accounting.* keys (None: off); IDs now in never_suspend are lifted."""
        settings = (RiskSettings.from_config(accounting) if accounting is not None
                    else RiskSettings(enabled=False))
        self.accounts.configure(settings)
        self.counts.top_senders = getattr(accounting, "top_senders", self.counts.top_senders)
        return list(self.accounts.lift_allowed())

    def account(self, record: Any) -> list[Effect]:
        """A message record or rejected attempt of the correlation stage (engine/messages.py):
        counted over time and against its SASL ID's score."""
        return self.account_batch((record,))

    def account_batch(self, records: Iterable[Any]) -> list[Effect]:
        """account() of each record in turn; the effects of all of them."""
        book = self.accounts
        if not book.settings.enabled:
            return []
        effects: list[Effect] = []
        when, count, message = book.when, self.counts.message, book.message
        now = self.clock()          # once per batch: "now" for records without a time
        latest = now + ACCOUNT_CLOCK_SKEW
        for record in records:
            if not hasattr(record, "recipients"):
                self.counts.reject(record, when(getattr(record, "time", None), now))
                effects += book.reject(record)
                continue
            t = getattr(record, "done_time", None)
            if type(t) is not float or not t <= latest:     # else when(t) is t itself
                t = when(t, now)
            count(record, t)
            if record.sasl_user:
                effects += message(record, t)
        return effects

    def set_whitelist(self, wl: Whitelist) -> list[Effect]:
        """Install a new whitelist; bans now touching it are lifted, scores are kept."""
        self.whitelist = wl
        self._rebuild_protected()
        return self._lift_protected_bans()

    # -- keys ----------------------------------------------------------------

    # -- expiry heap -----------------------------------------------------------

    def _push(self, expires_at: float | None, kind: str, key: str) -> None:
        if expires_at is None:
            return
        self._seq += 1
        heapq.heappush(self._heap, (expires_at, self._seq, kind, key))
        # Refreshes leave stale entries behind; rebuild before they outweigh the live ones.
        if len(self._heap) > 2 * (len(self.grants) + len(self.bans)) + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        heap = [(g.expires_at, 0, "g", ip) for ip, g in self.grants.items()]
        heap += [(b.expires_at, 0, "b", net) for net, b in self.bans.items()
                 if b.expires_at is not None]
        heapq.heapify(heap)
        self._heap = heap

    def _live(self, entry: tuple[float, int, str, str]) -> bool:
        expires_at, _, kind, key = entry
        item = self.grants.get(key) if kind == "g" else self.bans.get(key)
        return item is not None and item.expires_at == expires_at

    def next_deadline(self) -> float | None:
        """When sweep() next has work: a grant or ban expiry, or stale offenders to forget.

        None: nothing will ever expire. Forgetting offenders is rate-limited to once per
        PRUNE_INTERVAL, so a stream of new offenders does not wake the daemon every millisecond.
        """
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        deadline = heap[0][0] if heap else None
        lift = self.accounts.next_deadline()
        if lift is not None:
            deadline = lift if deadline is None else min(deadline, lift)
        if self._tracked:
            newest = _newest_time(self._tracked[next(iter(self._tracked))])
            forget = (newest - _BIAS + self._epoch_ms + self._horizon_ms) / 1000
            forget = max(forget, self._last_prune + PRUNE_INTERVAL)
            deadline = forget if deadline is None else min(deadline, forget)
        return deadline

    def sweep(self) -> list[Effect]:
        """Expire grants and bans whose time has come, and forget offenders not seen for long."""
        now = self.clock()
        effects: list[Effect] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            _, _, kind, key = entry
            if kind == "g":
                del self.grants[key]
                self._counters["grants_expired"] += 1
                effects.append(GrantRevoked(key, "expired"))
            else:
                self._counters["bans_expired"] += 1
                effects.extend(self._lift([key], "expired"))
        effects.extend(self.accounts.sweep(now))
        self._prune(now)
        self._last_prune = now
        return effects

    # -- events ----------------------------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Effects of one parsed log event (a grant, a ban, or nothing)."""
        self._counters["events"] += 1
        kind = event.kind
        if kind == LOGIN or kind == AUTH:
            if event.user and self.accounts.settings.enabled:
                # The ID's client IPs and networks count in its risk score; a login never
                # suspends by itself unless the score was near the threshold already.
                suspended = self.accounts.login(event.user, event.ip, self.event_time(event))
                if suspended:
                    return [*suspended, *self._grant_after_login(event)]
            return self._grant_after_login(event)
        if not self.bancfg.enabled:
            return []
        index = self._kind_index.get(kind)
        if index is None:
            return []
        if index not in self._weights and not (index == self._uu and self._distinct_on):
            return []            # weight 0 costs no memory at all (unless user names count)
        return self._score(event, index)

    def _grant_after_login(self, event: Event) -> list[Effect]:
        """A relay grant for the client of a successful POP/IMAP login or SMTP AUTH."""
        kind = event.kind
        if not self.relay.enabled:
            return []
        if kind == LOGIN and (event.service or "").lower() not in self._services:
            return []
        if kind == AUTH and not self.relay.smtp_auth:
            return []
        ip = normalize_ip(event.ip)
        if ip is None:
            self._counters["ignored_invalid"] += 1
            return []
        if self._no_grant.contains(ip):
            self._counters["grants_excluded"] += 1
            return []
        return self._grant(ip, event.user, event.service, self.relay.grace, extend_only=True,
                           at=self.event_time(event))

    # -- bans ----------------------------------------------------------------

    # -- grants ----------------------------------------------------------------

    # -- persistence -------------------------------------------------------------

    def load(self, grants: list[Grant], bans: list[Ban],
             offenders: list[tuple[str, int, float]]) -> list[Effect]:
        """Restore state from the store; expired or no longer allowed entries come back as effects."""
        now = self.clock()
        effects: list[Effect] = []
        # The history is capped like the tracked offenders: the most recently banned are kept.
        for net, count, last in sorted(offenders, key=lambda row: row[2])[-self.bancfg.max_tracked:]:
            self._history[net] = [int(count), float(last)]
        for g in grants:
            ip = normalize_ip(g.ip)
            if ip is None or g.expires_at <= now:
                effects.append(GrantRevoked(g.ip, "expired"))
            elif self._no_grant.contains(ip):
                effects.append(GrantRevoked(g.ip, "excluded"))
            else:
                self.grants[ip] = replace(g, ip=ip)
                self._push(g.expires_at, "g", ip)
        for b in bans:
            if b.expires_at is not None and b.expires_at <= now:
                effects.append(BanLifted(b.net, "expired"))
                continue
            try:
                protected = self._protected.overlaps(b.net)
            except ValueError:
                effects.append(BanLifted(b.net, "expired"))
                continue
            if protected:
                effects.append(BanLifted(b.net, "whitelisted"))
                continue
            self.bans[b.net] = replace(b, reason=dict(b.reason))
            self._push(b.expires_at, "b", b.net)
        self._reindex_bans()
        return effects

    def is_protected(self, ip_or_net: str) -> bool:
        """Would the engine refuse to ban (any part of) this address or network?"""
        return self._protected.overlaps(ip_or_net)

    def stats(self) -> dict:
        """Counters and sizes for logwatchctl status."""
        return {
            "accounts": self.accounts.stats(),
            "grants": len(self.grants),
            "bans": len(self.bans),
            "permanent_bans": sum(1 for b in self.bans.values() if b.expires_at is None),
            "tracked": len(self._tracked),
            "max_tracked": self.bancfg.max_tracked,
            "history": len(self._history),
            "whitelist_entries": len(self.whitelist),
            "next_deadline": self.next_deadline(),
            **self._counters,
        }
