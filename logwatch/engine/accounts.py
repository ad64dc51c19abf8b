"""Account risk per SASL ID: sliding-window counts from message records, rejected attempts and
logins; a weighted score; suspensions with growth on repeat and expiry. Pure: no I/O, clock
injected; the daemon applies the SuspensionAdded/SuspensionLifted effects (logwatch.daemon.effects).
"""

from __future__ import annotations

import heapq
import json
import math
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from logwatch.clock import Clock, wall
from logwatch.engine.accountkeys import (  # noqa: F401  (valid_user & co. re-exported)
    MAX_USER_LENGTH,
    _ip_and_net,
    key_of,
    network_of,
    user_key,
    valid_user,
)
from logwatch.engine.fleet import FleetSuspensions
from logwatch.engine.model import Suspension, SuspensionAdded, SuspensionLifted

# Score weights (accounting.weights): each is multiplied by its count over accounting.window.
DEFAULT_WEIGHTS: dict[str, float] = {
    "messages": 0.1,       # per message sent
    "recipients": 0.5,     # per recipient
    "domains": 0.2,        # per distinct recipient domain beyond the first
    "ips": 5.0,            # per distinct client IP beyond the first (SMTP AUTH, POP, IMAP)
    "networks": 10.0,      # per distinct /24 (IPv4) or /64 (IPv6) beyond the first
    "bounce_ratio": 50.0,  # times the share of 5.x.x recipients (from min_bounce_sample on)
    "rejects": 2.0,        # per rejected attempt (NOQUEUE) of the ID
}
WEIGHT_NAMES = tuple(DEFAULT_WEIGHTS)
MAX_DISTINCT = 256            # per account and kind (domains, IPs, networks): oldest go first
LOG_CLOCK_SKEW = 300.0        # a record this far ahead of the clock is taken as "now"
_M, _R, _B, _F, _J = range(5)  # minute slots: messages, recipients, bounced, final, rejects
_NEVER = 1 << 62               # Account.oldest with no minute
# Each part of the score is rounded to 3 decimals: the rounded sum is within this much of the
# plain sum (7 parts, 0.0005 each, and float error), so a plain sum this far under the
# threshold cannot suspend (_judge() then skips the exact parts).
_SCORE_SLACK = 0.01


class RecipientLike(Protocol):
    address: str
    status: str
    dsn: str


class MessageLike(Protocol):
    """What is read of engine/messages.py's MessageRecord."""

    client_ip: str
    sasl_user: str
    recipients: Sequence[RecipientLike]
    done_time: float


class RejectLike(Protocol):
    """What is read of engine/messages.py's RejectedAttempt."""

    time: float
    client_ip: str
    sasl_user: str


@dataclass
class RiskSettings:
    """The accounting.* keys the score and the suspensions use."""

    enabled: bool = True
    suspend_score: float = 100.0
    suspend_time: float = 3600.0
    suspend_growth: float = 2.0       # a repeat suspension lasts this much longer ...
    max_suspend_time: float = 7 * 86400.0   # ... up to this cap
    window: float = 3600.0            # the sliding window of every count
    never_suspend: Collection[str] = ()
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    min_bounce_sample: int = 10       # recipients with a final status before the ratio counts
    max_accounts: int = 100_000       # least recently seen accounts are forgotten beyond this

    @classmethod
    def from_config(cls, cfg: Any) -> RiskSettings:
        """From an AccountingConfig (or anything with some of these attributes)."""
        # A partial weights mapping is completed by AccountBook.configure().
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__
                      if hasattr(cfg, name)})


@dataclass(slots=True)
class Account:
    """The window of one SASL ID: per-minute counts and the distinct things seen, each with
    the minute it was last seen (dicts in last-seen order: the oldest are first)."""

    minutes: dict[int, list[int]] = field(default_factory=dict)
    totals: list[int] = field(default_factory=lambda: [0] * 5)
    domains: dict[str, int] = field(default_factory=dict)
    ips: dict[str, int] = field(default_factory=dict)
    nets: dict[str, int] = field(default_factory=dict)
    newest: int = 0                   # newest minute counted
    oldest: int = _NEVER              # <= every key of minutes (prune()'s scan skipped above)

    def slot(self, minute: int) -> list[int]:
        row = self.minutes.get(minute)
        if row is None:
            row = self.minutes[minute] = [0] * 5
            if minute < self.oldest:
                self.oldest = minute
        if minute > self.newest:
            self.newest = minute
        return row

    def prune(self, cutoff: int) -> None:
        """Forget what was last seen before minute `cutoff`."""
        if self.oldest < cutoff:
            for minute in [m for m in self.minutes if m < cutoff]:
                for i, n in enumerate(self.minutes.pop(minute)):
                    self.totals[i] -= n
            self.oldest = min(self.minutes, default=_NEVER)
        for seen in (self.domains, self.ips, self.nets):
            while seen:
                for key in seen:            # noqa: B007 - the oldest (no iterator object made)
                    break
                if seen[key] >= cutoff:
                    break
                del seen[key]

    def as_json(self) -> dict[str, Any]:
        return {"m": {str(k): v for k, v in self.minutes.items()}, "d": self.domains,
                "i": self.ips, "n": self.nets}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Account:
        acc = cls()
        for k, row in raw.get("m", {}).items():
            acc.minutes[int(k)] = [int(x) for x in row][:5]
        for i in range(5):
            acc.totals[i] = sum(r[i] for r in acc.minutes.values() if len(r) > i)
        acc.newest = max(acc.minutes, default=0)
        acc.oldest = min(acc.minutes, default=_NEVER)
        for name, attr in (("d", "domains"), ("i", "ips"), ("n", "nets")):
            items = sorted(((str(k), int(v)) for k, v in raw.get(name, {}).items()),
                           key=lambda kv: kv[1])
            getattr(acc, attr).update(items)
            acc.newest = max(acc.newest, max((v for _, v in items), default=0))
        return acc


def _all_live(acc: Account, cutoff: int) -> bool:
    """Nothing of acc is older than minute `cutoff` (it can be read as it is)."""
    return (min(acc.minutes, default=cutoff) >= cutoff
            and all(next(iter(d.values()), cutoff) >= cutoff
                    for d in (acc.domains, acc.ips, acc.nets)))


def _window_view(acc: Account, cutoff: int) -> Account:
    """What of acc is still in the window from minute `cutoff` (a new Account, acc as is)."""
    live = Account(newest=acc.newest)
    for minute, row in acc.minutes.items():
        if minute >= cutoff:
            for i, n in enumerate(row):
                live.totals[i] += n
    live.domains = {k: v for k, v in acc.domains.items() if v >= cutoff}
    live.ips = {k: v for k, v in acc.ips.items() if v >= cutoff}
    live.nets = {k: v for k, v in acc.nets.items() if v >= cutoff}
    return live


def _touch(seen: dict[str, int], key: str, minute: int) -> None:
    seen.pop(key, None)
    seen[key] = minute
    if len(seen) > MAX_DISTINCT:
        del seen[next(iter(seen))]


class AccountBook(FleetSuspensions):
    """Accounts, their scores and suspensions; every method returns the effects to apply."""

    def __init__(self, settings: RiskSettings | None = None, clock: Clock = wall) -> None:
        self.clock = clock
        self.accounts: OrderedDict[str, Account] = OrderedDict()   # least recently seen first
        self.suspensions: dict[str, Suspension] = {}
        self.history: OrderedDict[str, list[float]] = OrderedDict()  # user -> [count, last]
        self._heap: list[tuple[float, str]] = []
        self.dirty: set[str] = set()          # accounts changed since account_rows(dirty=True)
        self.counters: dict[str, int] = dict.fromkeys(
            ("messages", "rejects", "logins", "invalid_users", "evicted", "suspended",
             "suspensions_expired", "never_suspend_over"), 0)
        self.configure(settings or RiskSettings())

    def configure(self, settings: RiskSettings) -> None:
        self.settings = settings
        self.weights = {**DEFAULT_WEIGHTS, **settings.weights}
        self._never = frozenset(user_key(u) for u in settings.never_suspend)
        self._window_min = max(1, math.ceil(settings.window / 60))

    # -- input -------------------------------------------------------------------------

    def when(self, t: float | None, now: float | None = None) -> float:
        """A record's own time; the clock's (or `now`) when missing or too far ahead."""
        if now is None:
            now = self.clock()
        if t is None or not isinstance(t, (int, float)) or not t <= now + LOG_CLOCK_SKEW:
            return now
        return float(t)

    def _account(self, user: object, when: float) -> tuple[str, Account] | None:
        key = key_of(user)
        if not key:
            if user:
                self.counters["invalid_users"] += 1
            return None
        accounts = self.accounts
        acc = accounts.get(key)
        if acc is None:
            acc = accounts[key] = Account()
            while len(accounts) > max(self.settings.max_accounts, 1):
                accounts.popitem(last=False)
                self.counters["evicted"] += 1
        else:
            accounts.move_to_end(key)
        self.dirty.add(key)
        acc.prune(max(acc.newest, int(when // 60)) - self._window_min + 1)
        return key, acc

    def _ip(self, acc: Account, raw: str | None, minute: int) -> None:
        found = _ip_and_net(raw) if raw else None
        if found is not None:
            _touch(acc.ips, found[0], minute)
            _touch(acc.nets, found[1], minute)

    def message(self, rec: MessageLike, when: float | None = None) -> list[SuspensionAdded]:
        """One message that left the queue, sent by rec.sasl_user ("" = not authenticated);
        `when`: its self.when() if the caller has it already."""
        if not self.settings.enabled or not rec.sasl_user:
            return []
        if when is None:
            when = self.when(getattr(rec, "done_time", None))
        found = self._account(rec.sasl_user, when)
        if found is None:
            return []
        key, acc = found
        self.counters["messages"] += 1
        minute = int(when // 60)
        row = acc.slot(minute)
        domains = acc.domains
        n = final = bounced = 0
        for r in rec.recipients:
            n += 1
            dsn = getattr(r, "dsn", "")
            if dsn:
                first = dsn[0]
                if first == "2":
                    final += 1
                elif first == "5":
                    final += 1
                    bounced += 1
            addr = getattr(r, "address", "")
            if addr and "@" in addr:
                # The text after the last "@" (rsplit's), lower case, at most 256 characters.
                domain = addr[addr.rindex("@") + 1:].lower()[:MAX_USER_LENGTH]
                domains.pop(domain, None)
                domains[domain] = minute           # _touch(), inline: once per recipient
                if len(domains) > MAX_DISTINCT:
                    del domains[next(iter(domains))]
        totals = acc.totals
        row[_M] += 1
        totals[_M] += 1
        row[_R] += n
        totals[_R] += n
        row[_B] += bounced
        totals[_B] += bounced
        row[_F] += final
        totals[_F] += final
        self._ip(acc, rec.client_ip, minute)
        return self._judge(key, acc)

    def reject(self, attempt: RejectLike) -> list[SuspensionAdded]:
        """A rejected attempt (NOQUEUE) by an authenticated client."""
        if not self.settings.enabled or not attempt.sasl_user:
            return []
        when = self.when(getattr(attempt, "time", None))
        found = self._account(attempt.sasl_user, when)
        if found is None:
            return []
        key, acc = found
        self.counters["rejects"] += 1
        minute = int(when // 60)
        acc.slot(minute)[_J] += 1
        acc.totals[_J] += 1
        self._ip(acc, attempt.client_ip, minute)
        return self._judge(key, acc)

    def login(self, user: str | None, ip: str | None, at: float | None) -> list[SuspensionAdded]:
        """A successful SMTP AUTH, POP or IMAP login: the ID's client IPs and networks."""
        if not self.settings.enabled or not user:
            return []
        when = self.when(at)
        found = self._account(user, when)
        if found is None:
            return []
        key, acc = found
        self.counters["logins"] += 1
        minute = int(when // 60)
        acc.newest = max(acc.newest, minute)
        self._ip(acc, ip, minute)
        return self._judge(key, acc)

    # -- the score ---------------------------------------------------------------------

    def components(self, acc: Account) -> dict[str, float]:
        """Each weight's share of the score (only the non-zero ones)."""
        w, t = self.weights, acc.totals
        ratio = t[_B] / t[_F] if t[_F] >= max(self.settings.min_bounce_sample, 1) else 0.0
        parts = {
            "messages": w["messages"] * t[_M],
            "recipients": w["recipients"] * t[_R],
            "domains": w["domains"] * max(0, len(acc.domains) - 1),
            "ips": w["ips"] * max(0, len(acc.ips) - 1),
            "networks": w["networks"] * max(0, len(acc.nets) - 1),
            "bounce_ratio": w["bounce_ratio"] * ratio,
            "rejects": w["rejects"] * t[_J],
        }
        return {k: round(v, 3) for k, v in parts.items() if v}

    def score(self, acc: Account) -> float:
        return round(sum(self.components(acc).values()), 3)

    def _plain_score(self, acc: Account) -> float:
        """The score without components()' rounding (within _SCORE_SLACK of score())."""
        w = self.weights
        messages, recipients, bounced, final, rejects = acc.totals
        ratio = bounced / final if final and final >= self.settings.min_bounce_sample else 0.0
        domains, ips, nets = len(acc.domains), len(acc.ips), len(acc.nets)
        return (w["messages"] * messages + w["recipients"] * recipients
                + w["domains"] * (domains - 1 if domains > 1 else 0)    # max(0, n - 1)
                + w["ips"] * (ips - 1 if ips > 1 else 0)
                + w["networks"] * (nets - 1 if nets > 1 else 0)
                + w["bounce_ratio"] * ratio + w["rejects"] * rejects)

    def _judge(self, key: str, acc: Account) -> list[SuspensionAdded]:
        if key in self.suspensions:
            return []
        plain = self._plain_score(acc)
        if plain + _SCORE_SLACK + abs(plain) * 1e-9 < self.settings.suspend_score:
            return []                   # far enough under: the exact parts cannot reach it
        parts = self.components(acc)
        score = sum(parts.values())
        if score < self.settings.suspend_score:
            return []
        if key in self._never:
            self.counters["never_suspend_over"] += 1
            return []
        # Counting starts afresh: a lifted suspension needs a new burst to come back.
        self.accounts[key] = Account(newest=acc.newest)
        return [self._suspend(key, round(score, 3), parts, "auto", None)]

    # -- suspensions -------------------------------------------------------------------

    def _duration(self, previous: int) -> float:
        s = self.settings
        try:
            duration = s.suspend_time * s.suspend_growth ** previous
        except OverflowError:
            duration = math.inf
        return min(duration, s.max_suspend_time)

    def _suspend(self, key: str, score: float, reason: dict[str, float], source: str,
                 duration: float | None) -> SuspensionAdded:
        now = self.clock()
        previous = int(self.history[key][0]) if key in self.history else 0
        if source == "auto":
            duration = self._duration(previous)
            self.history[key] = [previous + 1, now]
            self.history.move_to_end(key)
            while len(self.history) > max(self.settings.max_accounts, 1):
                self.history.popitem(last=False)
        assert duration is not None
        sus = Suspension(user=key, since=now, expires_at=now + duration, score=score,
                         reason=dict(reason), offences=previous + 1, source=source)
        self.suspensions[key] = sus
        heapq.heappush(self._heap, (sus.expires_at, key))
        self.counters["suspended"] += 1
        return SuspensionAdded(sus)

    def suspend(self, user: str, duration: float | None = None) -> list[SuspensionAdded]:
        """Manual suspension (logwatchctl suspend); ValueError for an invalid or allowed ID."""
        if not valid_user(user):
            raise ValueError(f"{user!r} is not a SASL ID that can be a table key")
        key = user_key(user)
        if key in self._never:
            raise ValueError(f"{key} is in accounting.never_suspend; not suspended")
        duration = self.settings.suspend_time if duration is None else duration
        if not duration > 0 or math.isinf(duration):
            raise ValueError(f"suspension must be positive and finite, not {duration}")
        acc = self.accounts.get(key)
        score = self.score(acc) if acc is not None else 0.0
        return [self._suspend(key, score, {}, "manual", duration)]

    def unsuspend(self, user: str, why: str = "unsuspend") -> list[SuspensionLifted]:
        """Lift a suspension now; [] if the ID is not suspended."""
        key = user_key(str(user))
        if self.suspensions.pop(key, None) is None:
            return []
        return [SuspensionLifted(key, why)]

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _live(self, entry: tuple[float, str]) -> bool:
        sus = self.suspensions.get(entry[1])
        return sus is not None and sus.expires_at == entry[0]

    def sweep(self, now: float | None = None) -> list[SuspensionLifted]:
        """Lift the suspensions whose time has come."""
        now = self.clock() if now is None else now
        effects: list[SuspensionLifted] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if self._live(entry):
                self.counters["suspensions_expired"] += 1
                effects.extend(self.unsuspend(entry[1], "expired"))
        return effects

    # -- persistence ------------------------------------------------------------------

    def load(self, suspensions: Iterable[Suspension], history: Iterable[tuple[str, int, float]],
             accounts: Iterable[tuple[str, str | Mapping[str, Any]]] = ()) -> list[Any]:
        """Restore from the store; expired (or now allowed) suspensions come back as lifts."""
        now = self.clock()
        effects: list[Any] = []
        for user, count, last in sorted(history, key=lambda r: r[2])[-self.settings.max_accounts:]:
            self.history[user] = [int(count), float(last)]
        for sus in suspensions:
            if sus.expires_at <= now:
                effects.append(SuspensionLifted(sus.user, "expired"))
            elif sus.user in self._never or not valid_user(sus.user):
                effects.append(SuspensionLifted(sus.user, "never_suspend"))
            else:
                self.suspensions[sus.user] = sus
                heapq.heappush(self._heap, (sus.expires_at, sus.user))
        for user, raw in accounts:
            try:
                state = json.loads(raw) if isinstance(raw, str) else raw
                self.accounts[user] = Account.from_json(state)
            except (ValueError, TypeError, AttributeError, IndexError):
                continue         # a damaged row costs that account's window, nothing more
        return effects

    def lift_allowed(self) -> list[SuspensionLifted]:
        """After a reload: IDs now in never_suspend lose their suspension."""
        return [e for key in [k for k in self.suspensions if k in self._never]
                for e in self.unsuspend(key, "never_suspend")]

    def history_rows(self, users: Iterable[str] | None = None) -> list[tuple[str, int, float]]:
        keys = self.history if users is None else [u for u in users if u in self.history]
        return [(u, int(self.history[u][0]), float(self.history[u][1])) for u in keys]

    def account_rows(self, dirty: bool = False) -> list[tuple[str, dict[str, Any], float]]:
        """(user, window state, newest minute's time) of every account (or of those changed
        since the last such call), for the store."""
        if dirty:
            keys = [k for k in self.dirty if k in self.accounts]
            self.dirty.clear()
        else:
            keys = list(self.accounts)
        return [(u, self.accounts[u].as_json(), self.accounts[u].newest * 60.0) for u in keys]

    # -- queries (read only) ----------------------------------------------------------

    def view(self, limit: int | None = 20) -> dict[str, Any]:
        """Top senders (by score) with counts, score and why; suspended IDs with expiry."""
        cutoff = int(self.clock() // 60) - self._window_min + 1
        scored = []
        for user, acc in self.accounts.items():
            live = acc if _all_live(acc, cutoff) else _window_view(acc, cutoff)
            if any(live.totals) or live.ips:
                scored.append((-self.score(live), user, live))
        top = heapq.nsmallest(limit, scored) if limit else sorted(scored)
        rows = []
        for neg, user, live in top:
            t = live.totals
            rows.append({"user": user, "score": -neg, "why": self.components(live),
                         "messages": t[_M], "recipients": t[_R], "bounces": t[_B],
                         "rejects": t[_J], "domains": len(live.domains), "ips": len(live.ips),
                         "networks": len(live.nets), "never_suspend": user in self._never})
        suspended = [{"user": s.user, "since": s.since, "expires": s.expires_at,
                      "score": s.score, "why": s.reason, "offences": s.offences,
                      "source": s.source}
                     for s in sorted(self.suspensions.values(), key=lambda s: s.since)]
        return {"accounts": rows, "total": len(scored),
                "suspended": suspended, "threshold": self.settings.suspend_score,
                "window": self.settings.window}

    def stats(self) -> dict[str, int]:
        return {"accounts": len(self.accounts), "suspensions": len(self.suspensions),
                **self.counters}
