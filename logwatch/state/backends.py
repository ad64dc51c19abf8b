"""Store backends (STORE_BACKENDS registry): where the one schema lives and the few things the
engines do differently (schema version, the "started" mark, transaction start, node keys)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from logwatch.registry import Registry
from logwatch.util.safeio import make_private, tighten

# Set in SQLite's file header (PRAGMA application_id) and PostgreSQL's meta table once a daemon
# has started on the store: an empty store without it was never used, whatever its schema.
APPLICATION_ID = 0x4C575344
DEFAULT_URL = "sqlite:///var/lib/logwatchd/state.db"
# The LISTEN/NOTIFY channel of a shared store, and the payload budget (PostgreSQL: < 8000).
CHANNEL = "logwatchd"
PAYLOAD_MAX = 7000


def announcements(node: str, banned: set[str], lifted: set[str],
                  suspended: set[str] = frozenset(), unsuspended: set[str] = frozenset(),
                  ) -> list[str]:
    """JSON payloads {"n": node, "b": [banned nets], "u": [lifted nets]} (and "s"/"r": the
    suspended/unsuspended SASL IDs, when there are), each < PAYLOAD_MAX."""
    out: list[str] = []
    items = [(k, x) for k, xs in (("b", banned), ("u", lifted), ("s", suspended),
                                  ("r", unsuspended)) for x in sorted(xs)]
    chunk: dict[str, list[str]] = {"b": [], "u": []}
    size = 64 + len(node)

    def close() -> None:
        out.append(json.dumps({"n": node, **{k: v for k, v in chunk.items()
                                             if v or k in ("b", "u")}}, separators=(",", ":")))

    for key, name in items:
        cost = len(json.dumps(name)) + 2
        if size + cost > PAYLOAD_MAX:
            close()
            chunk, size = {"b": [], "u": []}, 64 + len(node)
        chunk.setdefault(key, []).append(name)
        size += cost
    if any(chunk.values()):
        close()
    return out


class Backend(Protocol):
    db: Any            # execute/executemany/in_transaction/close, portable SQL with `?`
    name: Path | str   # what logs and errors show (a PostgreSQL URL without its password)
    node_key: str      # the node column's value for per-node rows (positions, cursors)
    shared: bool       # other nodes write the same tables
    begin: str         # the statement that opens a write transaction
    errors: tuple[type[BaseException], ...]   # what opening may raise (a StoreError then)

    def lock_schema(self) -> None: ...
    def write_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...
    def select_all(self, sql: str, types: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...
    def announce(self, db: Any, banned: set[str], lifted: set[str],
                 suspended: set[str] = ..., unsuspended: set[str] = ...) -> None: ...
    def version(self) -> int: ...
    def set_version(self, version: int) -> None: ...
    def marked(self) -> bool: ...
    def mark(self) -> None: ...


@dataclass(frozen=True)
class StoreBackend:
    name: str
    open: Callable[[str, str], Backend]   # (url, node) -> an open backend
    package: str                          # the Debian package the engine's client needs


STORE_BACKENDS: Registry[StoreBackend] = Registry("store backend")


def scheme(url: str) -> str:
    return url.split(":", 1)[0].lower() if ":" in url else ""


def display_url(url: str) -> str:
    """The URL without a password, for logs, status and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_problem(url: str) -> str | None:
    """Why url is no store URL, or None."""
    kind = scheme(url)
    if kind not in STORE_BACKENDS:
        return f"must start with {' or '.join(n + '://' for n in STORE_BACKENDS.names())}"
    if kind == "sqlite" and not sqlite_path(url).startswith("/"):
        return "sqlite:// needs an absolute path (sqlite:///var/lib/logwatchd/state.db)"
    return None


def sqlite_path(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


class SqliteBackend:
    """One file in WAL mode; a single machine, so per-node rows use the node key ''."""

    begin = "BEGIN IMMEDIATE"
    shared = False
    node_key = ""
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # User names and IPs: 0600 whatever the umask; SQLite gives the -wal and -shm
        # files the database file's mode, and old 0644 ones are tightened below.
        make_private(self.path)
        # isolation_level=None: we open transactions ourselves, so a batch is one commit.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a process kill (kill -9); only power loss can lose the
            # last transactions, which reconcile at start repairs from the firewall's own state.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            for suffix in ("-wal", "-shm"):
                tighten(f"{self.path}{suffix}")
        except BaseException:
            self.db.close()
            raise

    def lock_schema(self) -> None:
        pass   # BEGIN IMMEDIATE already excludes other writers

    def announce(self, db: Any, banned: set[str], lifted: set[str],
                 suspended: set[str] = frozenset(), unsuspended: set[str] = frozenset()) -> None:
        pass   # nobody else reads this file

    def write_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.db.executemany(sql, rows)

    def select_all(self, sql: str, types: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.db.execute(sql)]

    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def set_version(self, version: int) -> None:
        self.db.execute(f"PRAGMA user_version={int(version)}")

    def marked(self) -> bool:
        return self.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID

    def mark(self) -> None:
        self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")


_META = "CREATE TABLE IF NOT EXISTS logwatchd_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


class PostgresBackend:
    """A database shared by the fleet: node-keyed rows carry the node name; the version and
    the started mark live in logwatchd_meta (PostgreSQL has no user_version)."""

    begin = "BEGIN"
    shared = True

    def __init__(self, url: str, node: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise OSError("python3-psycopg is not installed (apt-get install "
                          "python3-psycopg)") from None
        from logwatch.state.pgdb import PgConnection, PgStoreError

        self.errors = (PgStoreError, OSError)
        self.url = url
        self.name = display_url(url)
        self.node_key = node
        self.db = PgConnection(url, node)

    def lock_schema(self) -> None:
        # Nodes starting together: one migrates, the others wait and find it done.
        self.db.execute(f"SELECT pg_advisory_xact_lock({APPLICATION_ID})")
        self.db.execute(_META)

    def write_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """A statement for many rows in few round trips (VALUES or IN widened)."""
        self.db.execute_rows(sql, rows)

    def select_all(self, sql: str, types: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A whole table's rows through COPY, typed by the column converters."""
        from logwatch.state.pgdb import copy_rows

        return copy_rows(self.db.copy_out(sql), types)

    def announce(self, db: Any, banned: set[str], lifted: set[str],
                 suspended: set[str] = frozenset(), unsuspended: set[str] = frozenset()) -> None:
        """NOTIFY the other nodes, in the caller's transaction (sent only if it commits)."""
        for payload in announcements(self.node_key, banned, lifted, suspended, unsuspended):
            db.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def _get(self, name: str) -> str | None:
        if self.db.execute("SELECT to_regclass('logwatchd_meta')").fetchone()[0] is None:
            return None
        row = self.db.execute("SELECT value FROM logwatchd_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def _set(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO logwatchd_meta (name, value) VALUES (?, ?) ON CONFLICT "
                        "(name) DO UPDATE SET value = excluded.value", (name, value))

    def version(self) -> int:
        return int(self._get("schema_version") or 0)

    def set_version(self, version: int) -> None:
        self._set("schema_version", str(int(version)))

    # Per node: a node joining the fleet (or the fleet on a new, empty database) adopts the
    # bans and grants its kernel and map hold, into the shared tables (see adopt.py).
    def marked(self) -> bool:
        return self._get(f"started:{self.node_key}") is not None

    def mark(self) -> None:
        self._set(f"started:{self.node_key}", "1")


def _open_sqlite(url: str, node: str) -> Backend:
    return SqliteBackend(sqlite_path(url))


def _open_postgresql(url: str, node: str) -> Backend:
    return PostgresBackend(url, node)


STORE_BACKENDS.register("sqlite", StoreBackend("sqlite", _open_sqlite, "python3 (sqlite3)"))
STORE_BACKENDS.register("postgresql", StoreBackend("postgresql", _open_postgresql,
                                                   "python3-psycopg"))
