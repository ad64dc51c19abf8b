"""SQLite (WAL) store for grants, bans, offender history, tail positions and journal cursors."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from logwatch.engine.model import Ban, Grant, Position, Suspension
from logwatch.state import counts as _counts
from logwatch.util.safeio import make_private, tighten

# Set in the file header (PRAGMA application_id, no schema change) once a daemon has started
# on the store: an empty store without it was never used, whatever its schema.
APPLICATION_ID = 0x4C575344

# Kept in the key/value `cursors` table (no schema change): no journal cursor has this name.
FIREWALL_IDENTITY_KEY = "logwatchd:firewall-identity"

# Each entry migrates the schema from version i to i+1; never edit a shipped entry, append one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE grants (
        ip TEXT PRIMARY KEY,
        user TEXT,
        service TEXT,
        granted_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX grants_expiry ON grants (expires_at);
    CREATE TABLE bans (
        net TEXT PRIMARY KEY,
        since REAL NOT NULL,
        expires_at REAL,
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '{}',
        offences INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL DEFAULT 'auto'
    );
    CREATE TABLE offenders (
        net TEXT PRIMARY KEY,
        bans INTEGER NOT NULL,
        last_ban REAL NOT NULL
    );
    CREATE TABLE positions (
        path TEXT PRIMARY KEY,
        inode INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        fingerprint TEXT NOT NULL
    );
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        cursor TEXT NOT NULL
    );
    """,
    # 2: the policy service's audit of verdicts other than DUNNO, and its quota counters
    # (logwatch/state/policystore.py).
    """
    CREATE TABLE policy_verdicts (
        decided_at REAL NOT NULL,
        instance TEXT,
        queue_id TEXT,
        client_address TEXT,
        client_name TEXT,
        sasl_username TEXT,
        sender TEXT,
        recipient TEXT,
        rule TEXT NOT NULL,
        action TEXT NOT NULL
    );
    CREATE INDEX policy_verdicts_time ON policy_verdicts (decided_at);
    CREATE TABLE policy_quota_counts (
        quota TEXT NOT NULL,
        qkey TEXT NOT NULL,
        slice_len REAL NOT NULL,
        counts TEXT NOT NULL,
        PRIMARY KEY (quota, qkey)
    );
    """,
    # 3: accounting (state/accounting.py): open messages, message records (the stats log is
    # written from them; kept `accounting.keep` for logwatchctl messages), sequence marks.
    """
    CREATE TABLE acct_open (
        host TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (host, queue_id)
    );
    CREATE TABLE acct_records (
        seq BIGINT PRIMARY KEY,
        done_time DOUBLE PRECISION NOT NULL,
        sasl_user TEXT NOT NULL,
        client_ip TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX acct_records_time ON acct_records (done_time);
    CREATE INDEX acct_records_user ON acct_records (sasl_user, done_time);
    CREATE TABLE acct_meta (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    """,
    # 4: account risk (logwatch/engine/accounts.py) and counts over time (logwatch/state/counts.py).
    """
    CREATE TABLE suspensions (
        sasl_user TEXT PRIMARY KEY,
        since REAL NOT NULL,
        expires_at REAL NOT NULL,
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '{}',
        offences INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL DEFAULT 'auto'
    );
    CREATE TABLE suspension_history (
        sasl_user TEXT PRIMARY KEY,
        suspensions INTEGER NOT NULL,
        last_suspension REAL NOT NULL
    );
    CREATE TABLE account_windows (
        sasl_user TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        newest REAL NOT NULL
    );
    CREATE TABLE counts (
        series TEXT NOT NULL,
        step INTEGER NOT NULL,
        t BIGINT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series, step, t)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The state database cannot be opened or is of an unknown schema."""


class Store:
    """All persistent state of the daemon, in one SQLite file in WAL mode."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # User names and IPs: 0600 whatever the umask; SQLite gives the -wal and -shm
            # files the database file's mode, and old 0644 ones are tightened below.
            make_private(self.path)
            # isolation_level=None: we open transactions ourselves, so a batch is one commit.
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process kill (kill -9); only power loss can lose the
            # last transactions, which reconcile at start repairs from the firewall's own state.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            for suffix in ("-wal", "-shm"):
                tighten(f"{self.path}{suffix}")
            # A store just created (missing or 0-byte file), or left empty by a start that
            # died before its first reconcile: the daemon must not reconcile the kernel and
            # the map down to it (see adopt.py).
            created = self.schema_version == 0
            self._migrate()
            self.fresh = created or (not self._marked() and self._empty())
        except BaseException as exc:
            # Do not leak the connection (and its file descriptors) when the daemon retries.
            db = getattr(self, "db", None)
            if db is not None:
                db.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(f"{self.path}: {exc}") from exc
            raise
        self._depth = 0
        # Set by the daemon while grants/bans failed to commit (disk full): a position saved
        # then would skip, after a restart, the lines whose effects were lost.
        self.positions_held = False
        self.held_cursors: dict[str, str] = {}   # cursors given while held, newest each

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this logwatchd "
                f"({SCHEMA_VERSION}); refusing to touch it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={target}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _marked(self) -> bool:
        return self.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID

    def _empty(self) -> bool:
        return not any(self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("grants", "bans", "positions", "cursors"))

    def mark_started(self) -> None:
        """Record that a daemon started (and reconciled) on this store."""
        if not self._marked():
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; nests (only the outermost commits)."""
        if self._depth == 0:
            self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            try:
                self.db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) leaves the transaction open; end it so
                # the next transaction() can BEGIN instead of failing for ever.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # -- grants --------------------------------------------------------------

    def put_grants(self, grants: Iterable[Grant]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?)",
                ((g.ip, g.user, g.service, g.granted_at, g.expires_at) for g in grants),
            )

    def delete_grants(self, ips: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM grants WHERE ip = ?", ((ip,) for ip in ips))

    def load_grants(self) -> list[Grant]:
        rows = self.db.execute(
            "SELECT ip, user, service, granted_at, expires_at FROM grants ORDER BY ip"
        )
        return [Grant(*row) for row in rows]

    # -- bans ----------------------------------------------------------------

    def put_bans(self, bans: Iterable[Ban]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (b.net, b.since, b.expires_at, b.score, json.dumps(b.reason, sort_keys=True),
                     b.offences, b.source)
                    for b in bans
                ),
            )

    def delete_bans(self, nets: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM bans WHERE net = ?", ((n,) for n in nets))

    def load_bans(self) -> list[Ban]:
        rows = self.db.execute(
            "SELECT net, since, expires_at, score, reason, offences, source FROM bans ORDER BY net"
        )
        return [
            Ban(net=n, since=s, expires_at=e, score=sc, reason=json.loads(r), offences=o, source=src)
            for n, s, e, sc, r, o, src in rows
        ]

    # -- offender history (ban counts, for the growth factor and permanent bans) --

    def put_offenders(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """Rows of (net, number of bans so far, time of the last ban)."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO offenders VALUES (?, ?, ?)", rows)

    def load_offenders(self) -> list[tuple[str, int, float]]:
        return list(self.db.execute("SELECT net, bans, last_ban FROM offenders"))

    # -- tail positions and journal cursors ----------------------------------

    def save_positions(self, positions: Iterable[Position]) -> None:
        if self.positions_held:
            return
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                ((p.path, p.inode, p.dev, p.offset, p.fingerprint) for p in positions),
            )

    def load_positions(self) -> dict[str, Position]:
        rows = self.db.execute("SELECT path, inode, dev, offset, fingerprint FROM positions")
        return {row[0]: Position(*row) for row in rows}

    def get_cursor(self, name: str) -> str | None:
        row = self.db.execute("SELECT cursor FROM cursors WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_cursor(self, name: str, cursor: str) -> None:
        if self.positions_held:
            # Kept for write_held_cursors(): the journal source gives a cursor only once.
            self.held_cursors[name] = cursor
            return
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (name, cursor))

    # -- suspended SASL IDs, their history and the account windows (engine/accounts.py) --

    def put_suspensions(self, suspensions: Iterable[Suspension]) -> None:
        with self.transaction():
            for s in suspensions:
                self.db.execute("DELETE FROM suspensions WHERE sasl_user = ?", (s.user,))
                self.db.execute("INSERT INTO suspensions VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (s.user, s.since, s.expires_at, s.score,
                                 json.dumps(s.reason, sort_keys=True), s.offences, s.source))

    def replace_suspensions(self, suspensions: Iterable[Suspension]) -> None:
        """The suspensions := exactly these (a resync after a failed commit)."""
        with self.transaction():
            self.db.execute("DELETE FROM suspensions")
            self.put_suspensions(suspensions)

    def delete_suspensions(self, users: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM suspensions WHERE sasl_user = ?",
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

    def replace_account_windows(self, rows: Iterable[tuple[str, object, float]]) -> None:
        """The account windows := exactly these (user, state, newest minute's time)."""
        with self.transaction():
            self.db.execute("DELETE FROM account_windows")
            self.db.executemany("INSERT INTO account_windows VALUES (?, ?, ?)",
                                ((u, json.dumps(st, sort_keys=True), n) for u, st, n in rows))

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
        (or one of its own): the engine's memory is the truth after a failed commit."""
        with self.transaction():
            self.db.execute("DELETE FROM grants")
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
                self.db.execute("DELETE FROM cursors WHERE name = ?", (FIREWALL_IDENTITY_KEY,))
            else:
                self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                                (FIREWALL_IDENTITY_KEY, json.dumps(list(identity))))
