"""Account risk across the fleet: each node announces its risk inputs (message records,
rejected attempts and logins per SASL ID) so that every node's scores are the fleet's sums, and
applies the suspensions other nodes decide (or `logwatchctl suspend` on them) to its own
check_sasl_access table. A peer's input is validated like a log line of an attacker."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from logwatch.engine.accounts import valid_user
from logwatch.parsing.events import SUCCESS_KINDS, Event, normalize_ip

log = logging.getLogger("logwatchd.fleet")

MAX_RCPTS = 1000          # recipients counted of one announced message
MAX_DOMAINS = 20          # distinct recipient domains announced per message
MAX_DOMAIN = 64           # characters of each (the score counts distinct ones only)


@dataclass(frozen=True)
class PeerRecipient:
    address: str
    status: str
    dsn: str


@dataclass(frozen=True)
class PeerMessage:
    """A peer's message record, the fields engine/accounts.py reads (MessageLike)."""

    sasl_user: str
    client_ip: str
    done_time: float
    recipients: tuple[PeerRecipient, ...]


@dataclass(frozen=True)
class PeerReject:
    """A peer's rejected attempt (RejectLike)."""

    sasl_user: str
    client_ip: str
    time: float


def risk_items(records: Iterable[Any] = (), events: Iterable[Event] = ()) -> list[list[Any]]:
    """This node's risk inputs as announcement items, each well under a payload: a message
    ["m", t, user, ip, recipients, 2.x.x ones, 5.x.x ones, [distinct domains]], a reject
    ["j", t, user, ip] and a login ["l", t, user, ip]."""
    items: list[list[Any]] = []
    for r in records:
        if not valid_user(getattr(r, "sasl_user", "")):
            continue
        if hasattr(r, "recipients"):
            rcpts = r.recipients[:MAX_RCPTS]
            first = [(x.dsn or "")[:1] for x in rcpts]
            domains = sorted({x.address.rsplit("@", 1)[1].lower()[:MAX_DOMAIN]
                              for x in rcpts if "@" in x.address})[:MAX_DOMAINS]
            items.append(["m", r.done_time, r.sasl_user, r.client_ip or "", len(rcpts),
                          first.count("2"), first.count("5"), domains])
        else:
            items.append(["j", r.time, r.sasl_user, r.client_ip or ""])
    for ev in events:
        if ev.kind in SUCCESS_KINDS and valid_user(ev.user):
            try:
                when = ev.time.timestamp()
            except (AttributeError, ValueError, OverflowError, OSError):
                continue
            items.append(["l", when, ev.user, ev.ip or ""])
    return items


def parse_item(item: Any) -> tuple[str, Any] | None:
    """A peer's item as ("m"|"j", record) or ("l", (user, ip, time)); None when malformed."""
    if not isinstance(item, list) or len(item) not in (4, 8) or item[0] not in ("m", "j", "l"):
        return None
    kind, when, user, ip = item[:4]
    if (not isinstance(when, (int, float)) or isinstance(when, bool) or not math.isfinite(when)
            or not valid_user(user) or not isinstance(ip, str)):
        return None
    ip = normalize_ip(ip) if ip else ""
    if ip is None:
        return None
    if kind == "l":
        return ("l", (user, ip or None, float(when))) if len(item) == 4 else None
    if kind == "j":
        return ("j", PeerReject(user, ip, float(when))) if len(item) == 4 else None
    if len(item) != 8:
        return None
    n, n2, n5, domains = item[4:]
    if not (all(isinstance(x, int) and not isinstance(x, bool) for x in (n, n2, n5))
            and 0 <= n2 + n5 <= n <= MAX_RCPTS and min(n2, n5) >= 0
            and isinstance(domains, list) and len(domains) <= MAX_DOMAINS
            and all(isinstance(x, str) and 0 < len(x) <= MAX_DOMAIN for x in domains)):
        return None
    # The recipients as the score sees them: their number, final DSN classes and domains.
    dsns = ["5.0.0"] * n5 + ["2.0.0"] * n2 + [""] * (n - n2 - n5)
    names = domains or ["?"]
    rcpts = tuple(PeerRecipient(f"x@{names[min(i, len(names) - 1)]}" if domains else "", "", d)
                  for i, d in enumerate(dsns))
    return "m", PeerMessage(user, ip, float(when), rcpts)


class FleetRisk:
    """The risk side of FleetSync: peers' inputs into the account book, peers' suspensions
    into this node's check_sasl_access table (never stored again: their row is there)."""

    def __init__(self, daemon: Any, stats: dict[str, int]) -> None:
        self.d = daemon
        self.stats = stats
        stats.update(risk_received=0, bad_risk_items=0, suspensions_adopted=0,
                     suspensions_dropped=0)

    def enabled(self) -> bool:
        return bool(self.d.engine.accounts.settings.enabled)

    def feed(self, items: Sequence[Any]) -> None:
        """A peer's risk inputs: counted in this node's accounts (a suspension they cause
        is this node's decision, applied and stored like one of its own)."""
        if not self.enabled():
            return
        book, effects = self.d.engine.accounts, []
        for raw in items:
            parsed = parse_item(raw)
            if parsed is None:
                self.stats["bad_risk_items"] += 1
                continue
            kind, value = parsed
            self.stats["risk_received"] += 1
            if kind == "m":
                effects += book.message(value)
            elif kind == "j":
                effects += book.reject(value)
            else:
                effects += book.login(*value)
        if effects:
            self.d.apply(effects)
            self.d.schedule_engine()

    def adopt(self, users: Iterable[str]) -> None:
        if not self.enabled():
            return
        rows = self.d.store.load_suspensions_of(users)
        self._adopt_rows(rows)

    def _adopt_rows(self, rows: Sequence[Any]) -> None:
        new = self.d.engine.accounts.adopt_suspensions(rows)
        table = getattr(self.d, "suspension_table", None)
        if new and table is not None:
            self.d.effects.guarded("saslaccess", lambda: table.add(new))
        if new:
            log.info("action=fleet-suspensions added=%d first=%s", len(new), new[0].user)
            self.stats["suspensions_adopted"] += len(new)
            self.d.schedule_engine()        # their expiry is on the engine's timer

    def drop(self, users: Iterable[str]) -> None:
        if not self.enabled():
            return
        gone = self.d.engine.accounts.drop_suspensions(users)
        table = getattr(self.d, "suspension_table", None)
        if gone and table is not None:
            self.d.effects.guarded("saslaccess", lambda: table.remove(gone))
        if gone:
            log.info("action=fleet-unsuspensions lifted=%d first=%s", len(gone), gone[0])
            self.stats["suspensions_dropped"] += len(gone)

    def reconcile(self) -> None:
        """This node's suspensions := the table's (its own pending writes aside)."""
        if not self.enabled():
            return
        rows = self.d.store.load_suspensions()
        table = {s.user for s in rows}
        self.drop([u for u in list(self.d.engine.accounts.suspensions) if u not in table])
        self._adopt_rows(rows)
