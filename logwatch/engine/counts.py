"""Counts over time, per minute: messages, received, sent, recipients, rejects, bounces and the
top senders' messages and recipients. Pure: the daemon drains finished minutes into the store
(logwatch/state/counts.py), which downsamples and answers counts(series, since, until, step).

Series names: "messages" (every message that left the queue), "received" (not authenticated:
inbound), "sent" (by a SASL ID), "recipients", "bounces" (5.x.x recipients), "rejects"
(NOQUEUE), and per SASL ID of the minute's top senders "sender:ID" (messages) and
"sender_rcpt:ID" (recipients)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from logwatch.engine.accountkeys import key_of
from logwatch.engine.accounts import MessageLike, RejectLike

TOTALS = ("messages", "received", "sent", "recipients", "bounces", "rejects")
_MESSAGES, _RECEIVED, _SENT, _RECIPIENTS, _BOUNCES, _REJECTS = range(len(TOTALS))
MAX_OPEN_MINUTES = 120        # minutes not drained yet (a replay of old lines): oldest first
MAX_USERS_PER_MINUTE = 10_000  # beyond this a minute's new IDs go uncounted per ID


@dataclass(slots=True)
class Minute:
    totals: list[int] = field(default_factory=lambda: [0] * len(TOTALS))   # TOTALS' order
    users: dict[str, list[int]] = field(default_factory=dict)   # ID -> [messages, recipients]


class MinuteCounts:
    """Per-minute counters of the records seen; drain() hands finished minutes over."""

    def __init__(self, top_senders: int = 10) -> None:
        self.top_senders = top_senders
        self.minutes: dict[int, Minute] = {}
        self.dropped = 0

    def _minute(self, t: float) -> Minute:
        start = int(t // 60) * 60
        m = self.minutes.get(start)
        if m is not None:
            return m
        if len(self.minutes) >= MAX_OPEN_MINUTES:
            oldest = min(self.minutes)
            if start < oldest:
                self.dropped += 1
                return Minute()          # counted nowhere: older than all we hold
            del self.minutes[oldest]
            self.dropped += 1
        m = self.minutes[start] = Minute()
        return m

    def message(self, rec: MessageLike, t: float) -> None:
        m = self.minutes.get(int(t // 60) * 60) or self._minute(t)
        rcpts: Sequence = rec.recipients
        n = len(rcpts)
        bounced = 0
        try:
            for r in rcpts:
                dsn = r.dsn
                if dsn and dsn[0] == "5":
                    bounced += 1
        except AttributeError:          # a recipient without a dsn: counted as none
            bounced = sum(1 for r in rcpts if (getattr(r, "dsn", "") or "")[:1] == "5")
        tot = m.totals
        tot[_MESSAGES] += 1
        tot[_RECIPIENTS] += n
        if bounced:
            tot[_BOUNCES] += bounced
        user = rec.sasl_user
        if not user:
            tot[_RECEIVED] += 1
            return
        tot[_SENT] += 1
        key = key_of(user)
        if not key:
            return
        row = m.users.get(key)
        if row is None:
            if len(m.users) >= MAX_USERS_PER_MINUTE:
                return
            row = m.users[key] = [0, 0]
        row[0] += 1
        row[1] += n

    def reject(self, attempt: RejectLike, t: float) -> None:
        self._minute(t).totals[_REJECTS] += 1

    def drain(self, before: float) -> list[tuple[str, int, float]]:
        """Rows (series, minute start, value) of every minute that ended before `before`."""
        rows: list[tuple[str, int, float]] = []
        for start in sorted(s for s in self.minutes if s + 60 <= before):
            m = self.minutes.pop(start)
            rows.extend((name, start, float(v)) for name, v in zip(TOTALS, m.totals,
                                                                  strict=True) if v)
            top = sorted(m.users.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
            for user, (msgs, rcpts) in top[:self.top_senders]:
                rows.append((f"sender:{user}", start, float(msgs)))
                rows.append((f"sender_rcpt:{user}", start, float(rcpts)))
        return rows
