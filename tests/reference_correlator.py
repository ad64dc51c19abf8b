"""The correlator as it was before the row path (main at 3dee5e6), verbatim but for this line:
the oracle of tests/test_message_rows.py (feed() now runs the row path's core)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from logwatch.clock import Clock, wall

# A message that never reached the queue (a client= line and nothing after: the client gave
# up, or cleanup refused it) is forgotten after this long (or max_age when shorter), counted.
INCOMPLETE_AGE = 3600.0
# Queue ids that left the queue this recently: a later line of theirs is late, not new.
RECENT_MAX = 65536
RECENT_AGE = 600.0
# Programs whose messages end with their last recipient's final status (no "removed" line).
AUTOCLOSE_PROGRAMS = ("sendmail", "sm-mta", "sm-msp-queue")
FINAL = frozenset({"sent", "bounced", "expired", "deliverable", "undeliverable"})
_EXIM_STATUS = {"=>": "sent", "->": "sent", "**": "bounced", "==": "deferred"}
# Postfix's own words, which status_word() keeps as they are (checked first: most lines).
_POSTFIX_WORDS = frozenset({"sent", "deferred", "bounced", "expired", "deliverable",
                            "undeliverable"})


@dataclass(frozen=True)
class Recipient:
    address: str
    status: str          # sent | deferred | bounced | expired | ... (Postfix's words)
    dsn: str
    relay: str
    orig_to: str


@dataclass(frozen=True)
class MessageRecord:
    host: str
    queue_id: str
    client_ip: str
    client_name: str
    sasl_user: str       # "" when none
    sasl_method: str
    sender: str
    recipients: tuple[Recipient, ...]
    size: int
    nrcpt: int
    message_id: str
    connect_time: float  # 0.0: not seen (no client line)
    eom_time: float      # 0.0: not seen (never queued)
    done_time: float
    outcome: str         # delivered | bounced | partial | expired | rejected | incomplete | removed
    seq: int = 0         # the correlator's sequence number: each record is written once


@dataclass(frozen=True)
class RejectedAttempt:
    host: str
    time: float
    client_ip: str
    client_name: str
    sender: str
    recipient: str
    reason: str
    sasl_user: str       # "" when not known (NOQUEUE rejects carry none)


class _Open:
    """One open message; plain slots (100,000 of them must stay small: the text that repeats,
    such as hosts, client names, users and senders, is shared through `_share`)."""

    __slots__ = ("first", "client_ip", "client_name", "sasl_user", "sasl_method",
                 "sender", "size", "nrcpt", "msgid", "connect", "eom", "rcpts", "flags")

    def __init__(self, first: float, autoclose: bool) -> None:
        self.first = first
        self.client_ip = self.client_name = self.sasl_user = self.sasl_method = ""
        self.sender = self.msgid = ""
        self.size = self.nrcpt = 0
        self.connect = self.eom = 0.0
        self.rcpts: dict[tuple[str, str], Recipient] | None = None    # None: none yet
        self.flags = AUTOCLOSE if autoclose else 0

    @property
    def recipients(self) -> tuple[Recipient, ...]:
        return tuple(self.rcpts.values()) if self.rcpts else ()

    def state(self) -> list[Any]:
        """A JSON-able form (the store's row)."""
        return [self.first, self.flags & ~SAVED, self.client_ip, self.client_name,
                self.sasl_user, self.sasl_method, self.sender, self.size, self.nrcpt, self.msgid,
                self.connect, self.eom,
                [[r.address, r.status, r.dsn, r.relay, r.orig_to] for r in self.recipients]]

    @classmethod
    def from_state(cls, s: list[Any]) -> _Open:
        m = cls(float(s[0]), False)
        m.flags = int(s[1]) | SAVED
        (m.client_ip, m.client_name, m.sasl_user, m.sasl_method, m.sender) = map(str, s[2:7])
        m.size, m.nrcpt, m.msgid = int(s[7]), int(s[8]), str(s[9])
        m.connect, m.eom = float(s[10]), float(s[11])
        for r in s[12]:
            rcpt = Recipient(*map(str, r))
            m.rcpts = m.rcpts or {}
            m.rcpts[(rcpt.address, rcpt.orig_to)] = rcpt
        return m


# _Open.flags
AUTOCLOSE, RETURNED, SAVED = 1, 2, 4
_SHARED: dict[str, str] = {}
_SHARED_MAX = 65536


def _share(text: str) -> str:
    """One object for text that repeats across messages (bounded: cleared when full)."""
    found = _SHARED.get(text)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _SHARED[text] = text
    return found


_new, _set = object.__new__, object.__setattr__


def _recipient(address: str, status: str, dsn: str, relay: str, orig_to: str) -> Recipient:
    """Recipient(...) without the frozen dataclass's five setattr calls (one per delivery)."""
    r = _new(Recipient)
    _set(r, "__dict__", {"address": address, "status": status, "dsn": dsn, "relay": relay,
                         "orig_to": orig_to})
    return r


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def status_word(status: str, dsn: str) -> str:
    """Postfix's status words as they are; Exim's arrows and Sendmail's stat= text mapped
    to them (Sendmail: by the DSN's class when the text is not Sent/Deferred)."""
    if status in _EXIM_STATUS:
        return _EXIM_STATUS[status]
    if status.islower() and status.isalpha():
        return status
    if status.startswith("Sent"):
        return "sent"
    if status.startswith("Deferred"):
        return "deferred"
    return {"2": "sent", "4": "deferred"}.get(dsn[:1], "bounced")


def split_recipients(text: str) -> list[str]:
    """Sendmail's `to=<a>,<b>` list: split at commas outside quotes and angle brackets."""
    out, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [a[1:-1] if a.startswith("<") and a.endswith(">") else a for a in out if a]


def outcome_of(m: _Open) -> str:
    """How a message that left the queue ended, from its recipients' last statuses."""
    if m.flags & RETURNED:
        return "expired"
    finals = [r.status for r in m.rcpts.values() if r.status in FINAL] if m.rcpts else []
    if not finals:
        return "removed"
    bounced = sum(1 for s in finals if s in ("bounced", "undeliverable", "expired"))
    if not bounced:
        return "delivered"
    return "bounced" if bounced == len(finals) else "partial"


class Correlator:
    """Open messages by (host, queue id), closed into MessageRecords."""

    def __init__(self, max_open: int = 200_000, max_age: float = 6 * 86400.0,
                 clock: Clock = wall, next_seq: int = 1) -> None:
        self.max_open, self.max_age, self.clock = max_open, max_age, clock
        # Keys are "HOST QUEUEID" (a host name has no blank): one string, not a tuple of two.
        self.open: dict[str, _Open] = {}
        self.recent: dict[str, float] = {}
        self.next_seq = next_seq
        self.newest = 0.0                  # the newest log time seen
        self.counts: Counter[str] = Counter()
        self.dirty: set[str] = set()      # open messages changed since the save
        self.deleted: set[str] = set()    # saved messages closed since the save
        self.records: list[MessageRecord] = []
        self.rejects: list[RejectedAttempt] = []

    # -- input ----------------------------------------------------------------------------

    def feed(self, lines: Iterable[Any]) -> tuple[list[MessageRecord], list[RejectedAttempt]]:
        """Message lines in log order -> the records closed and the rejected attempts seen."""
        self.records, self.rejects = [], []
        get_open, mark, merge = self.open.get, self.dirty.add, self._merge
        newest = self.newest
        for kind, when, host, program, fields, _rule in lines:
            if when > newest:
                newest = self.newest = when
            if kind == "message-reject":
                self._reject(when, host, fields)
                continue
            key = f"{host} {fields['qid']}"
            m = get_open(key)
            if kind == "message-done":
                self._done(key, m, when)
                continue
            if m is None or (kind == "message-start" and m.client_ip):
                m = self._begin(key, m, kind, when, program)
                if m is None:
                    continue
            merge(m, kind, when, fields)
            mark(key)
            if kind == "delivery" and m.flags & AUTOCLOSE:
                self._autoclose(key, m, when)
        return self.records, self.rejects

    def _begin(self, key: str, old: _Open | None, kind: str, when: float,
               program: str) -> _Open | None:
        """A new open message (None: a late line of a message already done)."""
        if old is not None:                # the queue id again before its "removed"
            self.counts["reused"] += 1
            self._close(key, old, when, "incomplete")
        elif key in self.recent and kind != "message-start":
            self.counts["late"] += 1
            return None
        self.recent.pop(key, None)
        if len(self.open) >= self.max_open:
            oldest = next(iter(self.open))
            self._forget(oldest, self.open[oldest])
            self.counts["dropped_cap"] += 1
        m = self.open[key] = _Open(when, program.startswith(AUTOCLOSE_PROGRAMS))
        self.counts["opened"] += 1
        return m

    def _merge(self, m: _Open, kind: str, when: float, f: dict[str, str | None]) -> None:
        get = f.get
        if kind == "delivery":
            rcpt, dsn, status = get("rcpt") or "", get("dsn") or "", get("status") or ""
            if status not in _POSTFIX_WORDS:
                status = status_word(status, dsn)
            orig, relay = get("orig_to") or "", get("relay") or ""
            # Sendmail lists several (to=<a>,<b>); everyone else logs one, as it is.
            rcpts = m.rcpts
            if rcpts is None:
                rcpts = m.rcpts = {}
            for address in (split_recipients(rcpt) if "," in rcpt or rcpt[:1] == "<"
                            else (rcpt,)):
                rcpts[(address, orig)] = _recipient(address, status, dsn, relay, orig)
            return
        ip = get("ip")
        if ip and not m.client_ip:
            m.client_ip, m.client_name, m.connect = ip, _share(get("name") or ""), when
        user = get("user")
        if user:
            m.sasl_user, m.sasl_method = _share(user), _share(get("method") or "")
        sender = get("sender")
        if sender is not None:
            m.sender = "" if sender == "<>" else _share(sender)
        size = get("size")
        if size is not None and not m.eom:
            m.size, m.nrcpt, m.eom = _int(size), _int(get("nrcpt")), when
        msgid = get("msgid")
        if msgid is not None:
            m.msgid = msgid
        if kind == "message-expired":
            m.flags |= RETURNED

    def _autoclose(self, key: str, m: _Open, when: float) -> None:
        finals = sum(1 for r in m.recipients if r.status in FINAL)
        if m.nrcpt and finals >= m.nrcpt:
            self._close(key, m, when, outcome_of(m))

    def _done(self, key: str, m: _Open | None, when: float) -> None:
        if m is not None:
            self._close(key, m, when, outcome_of(m))
        elif key in self.recent:
            self.counts["duplicate_done"] += 1
        else:
            self.counts["unknown_done"] += 1     # began before we read the log

    def _reject(self, when: float, host: str, f: dict[str, str | None]) -> None:
        qid = f["qid"] or ""
        key = f"{host} {qid}"
        m = None if qid == "NOQUEUE" else self.open.get(key)
        self.rejects.append(RejectedAttempt(
            host, when, f.get("ip") or "", f.get("name") or "", f.get("sender") or "",
            f.get("rcpt") or "", f.get("reason") or "", m.sasl_user if m is not None else ""))
        self.counts["rejects"] += 1
        if m is not None and f.get("cmd") in ("END-OF-MESSAGE", "DATA"):
            self._close(key, m, when, "rejected")

    # -- output ---------------------------------------------------------------------------

    def _close(self, key: str, m: _Open, when: float, outcome: str) -> None:
        self._forget(key, m)
        self.recent[key] = when
        if len(self.recent) > RECENT_MAX:
            del self.recent[next(iter(self.recent))]
        host, qid = key.split(" ", 1)
        # MessageRecord(...) without the frozen dataclass's sixteen setattr calls.
        record = _new(MessageRecord)
        _set(record, "__dict__", {
            "host": host, "queue_id": qid, "client_ip": m.client_ip,
            "client_name": m.client_name, "sasl_user": m.sasl_user,
            "sasl_method": m.sasl_method, "sender": m.sender,
            "recipients": tuple(m.rcpts.values()) if m.rcpts else (), "size": m.size,
            "nrcpt": m.nrcpt, "message_id": m.msgid, "connect_time": m.connect,
            "eom_time": m.eom, "done_time": when, "outcome": outcome, "seq": self.next_seq})
        self.next_seq += 1
        self.counts[outcome] += 1
        self.records.append(record)

    def _forget(self, key: str, m: _Open) -> None:
        del self.open[key]
        self.dirty.discard(key)
        if m.flags & SAVED:
            self.deleted.add(key)

    def sweep(self) -> list[MessageRecord]:
        """Expire what is older than the age limits (log time, never ahead of the clock)."""
        self.records = []
        horizon = min(self.newest, self.clock())
        incomplete = min(self.max_age, INCOMPLETE_AGE)
        for key, m in list(self.open.items()):
            if m.first + incomplete >= horizon:
                break                          # opened in log order: the rest are younger
            if not m.eom and not m.rcpts:
                self._forget(key, m)
                self.counts["aborted"] += 1
            elif m.first + self.max_age < horizon:
                self._close(key, m, horizon, "expired")
        for key in [k for k, t in self.recent.items() if t + RECENT_AGE < horizon]:
            del self.recent[key]
        return self.records

    # -- persistence (the store's rows) ---------------------------------------------------

    def changes(self) -> tuple[list[str], list[tuple[str, str]]]:
        """(keys of open messages to upsert, (host, queue id) to delete) since the last
        saved(); the sets stay until then. rows(keys) gives the upserts one at a time."""
        return ([k for k in self.dirty if k in self.open],
                [tuple(k.split(" ", 1)) for k in self.deleted])   # type: ignore[misc]

    def rows(self, keys: Iterable[str]) -> Iterator[tuple[str, str, list[Any]]]:
        """(host, queue id, state) of these open messages, made as they are consumed."""
        for key in keys:
            m = self.open.get(key)
            if m is not None:
                host, qid = key.split(" ", 1)
                yield host, qid, m.state()

    def saved(self, keys: Iterable[str]) -> None:
        """The changes() just committed."""
        for key in keys:
            m = self.open.get(key)
            if m is not None:
                m.flags |= SAVED
        self.dirty.clear()
        self.deleted.clear()

    def load(self, rows: Iterable[tuple[str, str, list[Any]]], next_seq: int) -> None:
        """Open messages from the store (in the order they were opened)."""
        loaded = sorted(((f"{h} {q}", _Open.from_state(s)) for h, q, s in rows),
                        key=lambda pair: pair[1].first)
        for key, m in loaded:
            self.open[key] = m
            self.newest = max(self.newest, m.first)
        self.next_seq = max(self.next_seq, next_seq)

    def stats(self) -> dict[str, int]:
        return {"open": len(self.open), **self.counts}
