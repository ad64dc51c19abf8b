"""The policy service's tables in the store (migration 2 of store.py): the verdict audit and
the quota counters. Portable SQL only (PostgreSQL accepts it too)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored verdict (time, the request's identity, the rule that decided, the action)."""

    decided_at: float
    instance: str
    queue_id: str
    client_address: str
    client_name: str
    sasl_username: str
    sender: str
    recipient: str
    rule: str
    action: str

    def as_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in AUDIT_FIELDS}


# The audit table's columns: AuditRow's fields, in order (verdicts() builds rows from them).
AUDIT_FIELDS = tuple(f.name for f in fields(AuditRow))


class PolicyStore:
    """Reads and writes the policy tables through the daemon's Store (its connection and
    transactions)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def put_verdicts(self, rows: Iterable[AuditRow]) -> None:
        self.store.db.executemany(
            f"INSERT INTO policy_verdicts ({', '.join(AUDIT_FIELDS)}) "
            f"VALUES ({', '.join('?' for _ in AUDIT_FIELDS)})",
            [tuple(getattr(r, f) for f in AUDIT_FIELDS) for r in rows])

    def prune_verdicts(self, before: float) -> int:
        cur = self.store.db.execute("DELETE FROM policy_verdicts WHERE decided_at < ?",
                                    (before,))
        return cur.rowcount

    def verdicts(self, since: float | None = None, ip: str | None = None,
                 user: str | None = None, limit: int = 1000) -> list[AuditRow]:
        """The newest `limit` verdicts matching, oldest first."""
        where, args = [], []
        if since is not None:
            where.append("decided_at >= ?")
            args.append(since)
        if ip is not None:
            where.append("client_address = ?")
            args.append(ip)
        if user is not None:
            where.append("LOWER(sasl_username) = ?")
            args.append(user.lower())
        sql = (f"SELECT {', '.join(AUDIT_FIELDS)} FROM policy_verdicts"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY decided_at DESC LIMIT ?")
        rows = self.store.db.execute(sql, (*args, limit)).fetchall()
        return [AuditRow(*r) for r in reversed(rows)]

    def put_quota_counts(self, rows: Iterable[tuple[str, str, float, str]],
                         now: float = 0.0) -> None:
        """Upsert this node's (quota, key, slice length, counters) rows; empty counters
        delete the row (on a shared store they are written as they are: the peers read
        changed rows, a deleted one would keep its old counts there until they slide out)."""
        rows = list(rows)
        node, shared = self.store.node_key, self.store.shared
        gone = [] if shared else [
            (node, q, k) for q, k, _, data in rows
            if not data or set(data.split(",")[1:]) == {"0"}]
        dropped = {(q, k) for _n, q, k in gone}
        keep = [(node, q, k, sl, data, now) for q, k, sl, data in rows
                if (q, k) not in dropped and data]
        db = self.store.db
        if gone:
            db.executemany("DELETE FROM policy_quota_counts WHERE node = ? AND quota = ? AND "
                           "qkey = ?", gone)
        if keep:
            db.executemany(
                "INSERT INTO policy_quota_counts (node, quota, qkey, slice_len, counts, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, quota, qkey) DO "
                "UPDATE SET slice_len = excluded.slice_len, counts = excluded.counts, "
                "updated_at = excluded.updated_at", keep)

    def load_quota_counts(self) -> list[tuple[str, str, float, str]]:
        """This node's rows."""
        return [tuple(r) for r in self.store.db.execute(
            "SELECT quota, qkey, slice_len, counts FROM policy_quota_counts WHERE node = ?",
            (self.store.node_key,))]

    def peer_quota_counts(self, marks: dict[str, float], margin: float
                          ) -> list[tuple[str, str, str, float, str, float]]:
        """The other nodes' rows changed since their marks (each in its writer's clock, less
        margin: a transaction may commit after a later one began), and every row of a node
        not in marks: (node, quota, key, slice length, counters, updated_at)."""
        sql = ("SELECT node, quota, qkey, slice_len, counts, updated_at FROM "
               "policy_quota_counts WHERE ")
        db, out = self.store.db, []
        for node, mark in marks.items():
            out += db.execute(sql + "node = ? AND updated_at > ?", (node, mark - margin))
        known = [self.store.node_key, *marks]
        out += db.execute(sql + f"node NOT IN ({', '.join('?' * len(known))})", known)
        return [tuple(r) for r in out]

    def prune_quota_counts(self, names: Iterable[str]) -> None:
        """Drop the counters of quotas no longer configured."""
        names = list(names)
        if not names:
            self.store.db.execute("DELETE FROM policy_quota_counts WHERE node = ?",
                                  (self.store.node_key,))
            return
        marks = ", ".join("?" for _ in names)
        self.store.db.execute(f"DELETE FROM policy_quota_counts WHERE node = ? AND quota NOT IN "
                              f"({marks})", [self.store.node_key, *names])
