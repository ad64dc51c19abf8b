"""The store: grants, bans, offender history, tail positions and journal cursors, in SQLite
(WAL) or a PostgreSQL database several nodes share (backends.py)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from logwatch.engine.model import Ban, Grant, Position, Suspension
from logwatch.state import counts as _counts
from logwatch.state.backends import (  # noqa: F401  (APPLICATION_ID: re-exported)
    APPLICATION_ID,
    STORE_BACKENDS,
    Backend,
    display_url,
    scheme,
    sqlite_path,
)
from logwatch.state.dialect import statements
from logwatch.state.schema import MIGRATIONS, SCHEMA_VERSION

# Kept in the key/value `cursors` table (no schema change): no journal cursor has this name.
FIREWALL_IDENTITY_KEY = "logwatchd:firewall-identity"



class StoreError(Exception):
    """The state database cannot be opened or is of an unknown schema."""


class Store:
    """All persistent state of the daemon: one SQLite file in WAL mode (Store(path)), or a
    PostgreSQL database the fleet shares (Store(url="postgresql://...", node=name)).

    Every statement is portable SQL with `?` placeholders; backends.py/dialect.py translate
    it. Per-node rows (positions, cursors, the firewall identity, a node's grants) carry
    node_key: '' for SQLite, the node name for PostgreSQL."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, url: str | None = None,
                 node: str = "") -> None:
        url = url if url is not None else f"sqlite://{path}"
        entry = STORE_BACKENDS.get(scheme(url))
        self.path: Path | str = Path(sqlite_path(url)) if entry.name == "sqlite" \
            else display_url(url)
        self.node = node
        backend: Backend | None = None
        try:
            backend = entry.open(url, node)
            self.backend = backend
            self.db = backend.db
            self.path = backend.name
            self.node_key = backend.node_key
            self.shared = backend.shared
            # A store just created (missing or 0-byte file), or left empty by a start that
            # died before its first reconcile: the daemon must not reconcile the kernel and
            # the map down to it (see adopt.py).
            created = self.schema_version == 0
            self._migrate()
            self.fresh = created or (not backend.marked()
                                     and (backend.shared or self._empty()))
        except BaseException as exc:
            # Do not leak the connection (and its file descriptors) when the daemon retries.
            if backend is not None:
                backend.db.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(f"{self.path}: {exc}") from exc
            raise
        self._depth = 0
        # Shared store: nets banned/lifted in the open transaction, announced to the other
        # nodes (NOTIFY, delivered only if the transaction commits) just before its COMMIT.
        self._announce: dict[str, set[str]] = {"b": set(), "u": set(), "s": set(), "r": set()}
        # Set by the daemon while grants/bans failed to commit (disk full): a position saved
        # then would skip, after a restart, the lines whose effects were lost.
        self.positions_held = False
        self.held_cursors: dict[str, str] = {}   # cursors given while held, newest each

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this logwatchd "
                f"({SCHEMA_VERSION}); refusing to touch it"
            )
        if version == SCHEMA_VERSION:
            return
        self.db.execute(self.backend.begin)
        try:
            self.backend.lock_schema()
            # Another node may have migrated while this one waited for the lock.
            for target in range(self.backend.version() + 1, SCHEMA_VERSION + 1):
                for statement in statements(MIGRATIONS[target - 1]):
                    self.db.execute(statement)
                self.backend.set_version(target)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _marked(self) -> bool:
        return self.backend.marked()

    def _empty(self) -> bool:
        return not any(self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("grants", "bans", "positions", "cursors"))

    def mark_started(self) -> None:
        """Record that a daemon started (and reconciled) on this store."""
        if not self._marked():
            self.backend.mark()

    @property
    def schema_version(self) -> int:
        return self.backend.version()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; nests (only the outermost commits)."""
        if self._depth == 0:
            self.db.execute(self.backend.begin)
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._forget_announcements()
                self.db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            try:
                self._send_announcements()
                self.db.execute("COMMIT")
            except BaseException:
                self._forget_announcements()
                # A failed COMMIT (disk full, I/O error) leaves the transaction open; end it so
                # the next transaction() can BEGIN instead of failing for ever.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def _write_rows(self, sql: str, rows: Iterable[tuple[Any, ...]], key: int = 1) -> None:
        """Many rows through one statement: `VALUES (?, ...)` upserts (the last row of each
        key, its first `key` columns, wins: a statement cannot update a row twice) or
        `IN (?)` deletes, in as few round trips as the backend can."""
        unique = list({row[:key]: row for row in rows}.values())
        if unique:
            self.backend.write_rows(sql, unique)

    def _send_announcements(self) -> None:
        a = self._announce
        if a["b"] or a["u"] or a["s"] or a["r"]:
            self.backend.announce(self.db, a["b"], a["u"], a["s"], a["r"])
            self._forget_announcements()

    def _note(self, key: str, opposite: str, names: Iterable[str]) -> None:
        """A shared store: announce these names under `key` at the commit (not `opposite`)."""
        if self.shared:
            names = set(names)
            self._announce[key] |= names
            self._announce[opposite] -= names

    def _forget_announcements(self) -> None:
        for nets in self._announce.values():
            nets.clear()

    # -- grants (a node loads and revokes its own; every node's are in the table) ----

    def put_grants(self, grants: Iterable[Grant]) -> None:
        with self.transaction():
            self._write_rows(
                "INSERT INTO grants (ip, user, service, granted_at, expires_at, node) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
                "user = excluded.user, service = excluded.service, "
                "granted_at = excluded.granted_at, expires_at = excluded.expires_at, "
                "node = excluded.node",
                ((g.ip, g.user, g.service, g.granted_at, g.expires_at, self.node_key)
                 for g in grants),
            )

    def delete_grants(self, ips: Iterable[str]) -> None:
        # Only this node's row: a later login on another node owns the row now.
        with self.transaction():
            self.db.executemany("DELETE FROM grants WHERE ip = ? AND node = ?",
                                ((ip, self.node_key) for ip in ips))

    def load_grants(self) -> list[Grant]:
        rows = self.db.execute(
            "SELECT ip, user, service, granted_at, expires_at FROM grants WHERE node = ? "
            "ORDER BY ip", (self.node_key,)
        )
        return [Grant(*row) for row in rows]

    def live_grants(self, now: float) -> list[tuple[Grant, str]]:
        """Every node's live grants with the granting node (logwatchctl grants)."""
        rows = self.db.execute(
            "SELECT ip, user, service, granted_at, expires_at, node FROM grants "
            "WHERE expires_at > ? ORDER BY ip", (now,))
        return [(Grant(*row[:5]), row[5]) for row in rows]

    def grant_nodes(self) -> dict[str, str]:
        """Every live row's deciding node, by IP (the whole fleet's, for logwatchctl)."""
        return dict(self.db.execute("SELECT ip, node FROM grants"))

    # -- bans (shared: every node enforces every row) ---------------------------------

    def put_bans(self, bans: Iterable[Ban]) -> None:
        bans = list(bans)
        with self.transaction():
            self._note("b", "u", (b.net for b in bans))
            self._write_rows(
                "INSERT INTO bans (net, since, expires_at, score, reason, offences, source, node) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (net) DO UPDATE SET "
                "since = excluded.since, expires_at = excluded.expires_at, "
                "score = excluded.score, reason = excluded.reason, "
                "offences = excluded.offences, source = excluded.source, node = excluded.node",
                (
                    (b.net, b.since, b.expires_at, b.score, json.dumps(b.reason, sort_keys=True),
                     b.offences, b.source, self.node_key)
                    for b in bans
                ),
            )

    def delete_bans(self, nets: Iterable[str]) -> None:
        nets = list(nets)
        with self.transaction():
            self._note("u", "b", nets)
            self._write_rows("DELETE FROM bans WHERE net IN (?)", ((n,) for n in nets))

    def load_bans(self, nets: Iterable[str] | None = None) -> list[Ban]:
        """All bans, or those of these nets (a peer's notification names them)."""
        sql = "SELECT net, since, expires_at, score, reason, offences, source FROM bans"
        if nets is None:
            rows = self.backend.select_all(sql + " ORDER BY net",
                                           (str, float, float, float, str, int, str))
        else:
            rows = self._select_in(f"{sql} WHERE net", list(nets))
        return [
            Ban(net=n, since=s, expires_at=e, score=sc, reason=json.loads(r), offences=o, source=src)
            for n, s, e, sc, r, o, src in rows
        ]

    def _select_in(self, sql: str, values: list[Any], chunk: int = 500) -> list[Any]:
        """The rows of `sql IN (values)`, asked `chunk` values at a time."""
        rows: list[Any] = []
        for i in range(0, len(values), chunk):
            part = values[i:i + chunk]
            rows += self.db.execute(f"{sql} IN ({', '.join('?' * len(part))})", part).fetchall()
        return rows

    def ban_nodes(self) -> dict[str, str]:
        """Each ban's deciding node, by net."""
        return dict(self.db.execute("SELECT net, node FROM bans"))

    # -- offender history (ban counts, for the growth factor and permanent bans) --

    def put_offenders(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """Rows of (net, number of bans so far, time of the last ban)."""
        with self.transaction():
            self._write_rows(
                "INSERT INTO offenders (net, bans, last_ban) VALUES (?, ?, ?) ON CONFLICT (net) "
                "DO UPDATE SET bans = excluded.bans, last_ban = excluded.last_ban",
                (tuple(r) for r in rows))

    def load_offenders(self) -> list[tuple[str, int, float]]:
        return [tuple(r) for r in self.db.execute("SELECT net, bans, last_ban FROM offenders")]

    # -- tail positions and journal cursors (per node) ------------------------------

    def save_positions(self, positions: Iterable[Position]) -> None:
        if self.positions_held:
            return
        with self.transaction():
            self._write_rows(
                "INSERT INTO positions (node, path, inode, dev, offset, fingerprint) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, path) DO UPDATE SET "
                "inode = excluded.inode, dev = excluded.dev, offset = excluded.offset, "
                "fingerprint = excluded.fingerprint",
                ((self.node_key, p.path, p.inode, p.dev, p.offset, p.fingerprint)
                 for p in positions), key=2,
            )

    def load_positions(self) -> dict[str, Position]:
        rows = self.db.execute("SELECT path, inode, dev, offset, fingerprint FROM positions "
                               "WHERE node = ?", (self.node_key,))
        return {row[0]: Position(*row) for row in rows}

    def get_cursor(self, name: str) -> str | None:
        row = self.db.execute("SELECT cursor FROM cursors WHERE node = ? AND name = ?",
                              (self.node_key, name)).fetchone()
        return row[0] if row else None

    def set_cursor(self, name: str, cursor: str) -> None:
        if self.positions_held:
            # Kept for write_held_cursors(): the journal source gives a cursor only once.
            self.held_cursors[name] = cursor
            return
        self._put_cursor(name, cursor)

    def _put_cursor(self, name: str, cursor: str) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO cursors (node, name, cursor) VALUES (?, ?, ?) "
                            "ON CONFLICT (node, name) DO UPDATE SET cursor = excluded.cursor",
                            (self.node_key, name, cursor))

    # -- suspended SASL IDs, their history and the account windows (engine/accounts.py) --

    def put_suspensions(self, suspensions: Iterable[Suspension]) -> None:
        suspensions = list(suspensions)
        with self.transaction():
            # The other nodes put them in their check_sasl_access tables.
            self._note("s", "r", (s.user for s in suspensions))
            self._write_rows(
                "INSERT INTO suspensions (sasl_user, since, expires_at, score, reason, offences, "
                "source) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sasl_user) DO UPDATE SET "
                "since = excluded.since, expires_at = excluded.expires_at, "
                "score = excluded.score, reason = excluded.reason, "
                "offences = excluded.offences, source = excluded.source",
                ((s.user, s.since, s.expires_at, s.score, json.dumps(s.reason, sort_keys=True),
                  s.offences, s.source) for s in suspensions))

    def replace_suspensions(self, suspensions: Iterable[Suspension],
                            lifted: Iterable[str] = ()) -> None:
        """The suspensions := exactly these (a resync after a failed commit); on a shared
        store the other nodes' rows stay: only these and the `lifted` IDs are written."""
        with self.transaction():
            if self.shared:
                self.delete_suspensions(lifted)
            else:
                self.db.execute("DELETE FROM suspensions")
            self.put_suspensions(suspensions)

    def load_suspensions_of(self, users: Iterable[str]) -> list[Suspension]:
        """The rows of these IDs (a peer's announcement names them)."""
        rows = self._select_in("SELECT sasl_user, since, expires_at, score, reason, offences, "
                               "source FROM suspensions WHERE sasl_user", list(users)[:10_000])
        return [Suspension(u, s, e, sc, json.loads(r), o, src) for u, s, e, sc, r, o, src in rows]

    def delete_suspensions(self, users: Iterable[str]) -> None:
        users = list(users)
        with self.transaction():
            self._note("r", "s", users)
            self._write_rows("DELETE FROM suspensions WHERE sasl_user IN (?)",
                             ((u,) for u in users))

    def load_suspensions(self) -> list[Suspension]:
        rows = self.db.execute("SELECT sasl_user, since, expires_at, score, reason, offences, "
                               "source FROM suspensions ORDER BY sasl_user")
        return [Suspension(u, s, e, sc, json.loads(r), o, src) for u, s, e, sc, r, o, src in rows]

    def put_suspension_history(self, rows: Iterable[tuple[str, int, float]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT INTO suspension_history VALUES (?, ?, ?) ON CONFLICT (sasl_user) DO "
                "UPDATE SET suspensions = excluded.suspensions, "
                "last_suspension = excluded.last_suspension", rows)

    def load_suspension_history(self) -> list[tuple[str, int, float]]:
        return list(self.db.execute("SELECT sasl_user, suspensions, last_suspension "
                                    "FROM suspension_history"))

    def put_account_windows(self, rows: Iterable[tuple[str, object, float]],
                            older_than: float | None = None) -> None:
        """Upsert (user, state, newest) rows; drop those whose newest is before older_than."""
        with self.transaction():
            self.db.executemany(
                "INSERT INTO account_windows VALUES (?, ?, ?) ON CONFLICT (sasl_user) DO "
                "UPDATE SET state = excluded.state, newest = excluded.newest",
                ((u, json.dumps(st, sort_keys=True), n) for u, st, n in rows))
            if older_than is not None:
                self.db.execute("DELETE FROM account_windows WHERE newest < ?", (older_than,))

    def load_account_windows(self) -> list[tuple[str, str]]:
        """(user, state) rows, the most recently active last."""
        return list(self.db.execute("SELECT sasl_user, state FROM account_windows "
                                    "ORDER BY newest"))

    # -- counts over time (state/counts.py) --------------------------------------------

    def put_counts(self, rows: Iterable[tuple[str, int, float]], now: float | None = None) -> None:
        """Minute rows (series, minute start, value), added up; older buckets pruned."""
        with self.transaction():
            _counts.add_counts(self.db, rows)
            if now is not None:
                _counts.prune_counts(self.db, now)

    def counts(self, series: str, since: float, until: float, step: int,
               now: float | None = None) -> list[tuple[int, float]]:
        """[(bucket start, value), ...] of one series: see logwatch.state.counts.counts."""
        return _counts.counts(self.db, series, since, until, step, now)

    def count_series(self, prefix: str = "") -> list[str]:
        return _counts.series_names(self.db, prefix)

    # -- resync after a failed write (disk full) -----------------------------

    def write_held_cursors(self) -> None:
        """Write the cursors given while positions were held (in the caller's transaction);
        the caller clears held_cursors once that transaction committed."""
        for name, cursor in self.held_cursors.items():
            self.set_cursor(name, cursor)

    def replace_state(self, grants: Iterable[Grant], bans: Iterable[Ban],
                      offenders: Iterable[tuple[str, int, float]]) -> None:
        """Make grants, bans and offender history exactly these, in the caller's transaction
        (or one of its own): the engine's memory is the truth after a failed commit. On a
        shared store only this node's grants and the bans it decided are replaced."""
        with self.transaction():
            self.db.execute("DELETE FROM grants WHERE node = ?", (self.node_key,))
            if self.shared:
                self.db.execute("DELETE FROM bans WHERE node = ?", (self.node_key,))
            else:
                self.db.execute("DELETE FROM bans")
                self.db.execute("DELETE FROM offenders")
            self.put_grants(grants)
            self.put_bans(bans)
            self.put_offenders(offenders)

    # -- firewall identity: the kernel objects we created (backend and names) ----------

    def get_firewall_identity(self) -> list[str] | None:
        """What the last run's firewall created, or None (nothing, or unreadable)."""
        raw = self.get_cursor(FIREWALL_IDENTITY_KEY)
        try:
            value = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        return value

    def set_firewall_identity(self, identity: Iterable[str] | None) -> None:
        """Remember (or forget, with None) what our firewall created in the kernel."""
        with self.transaction():
            if identity is None:
                self.db.execute("DELETE FROM cursors WHERE node = ? AND name = ?",
                                (self.node_key, FIREWALL_IDENTITY_KEY))
            else:
                self._put_cursor(FIREWALL_IDENTITY_KEY, json.dumps(list(identity)))
