"""A PostgreSQL connection that the store drives exactly as it drives sqlite3's (execute,
executemany, in_transaction, close): portable SQL translated, errors raised as store errors."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from logwatch.state.dialect import to_postgresql

# A dead or unreachable server must cost the single-threaded daemon at most this long per
# attempt (connect, or a statement that hangs on a half-open TCP connection).
CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 5000
# A call still waiting this long is on a hung server: its socket is shut (HangGuard).
HANG_TIMEOUT = STATEMENT_TIMEOUT_MS / 1000 + 2
GUARD_STEP = 0.25
# After a failure, calls within this many seconds fail at once instead of connecting again:
# the effects layer holds writes and retries on its own timer.
FAIL_FAST = 1.0


_VALUES = re.compile(r"VALUES\s*(\((?:\s*\?\s*,)*\s*\?\s*\))", re.IGNORECASE)
_IN = re.compile(r"\bIN\s*\(\s*\?\s*\)", re.IGNORECASE)


def _widen(sql: str, n: int) -> str:
    """The statement for n rows: VALUES (?, ?), (?, ?) ... or IN (?, ?, ...)."""
    m = _VALUES.search(sql)
    if m:
        return sql[:m.start(1)] + ", ".join([m.group(1)] * n) + sql[m.end(1):]
    m = _IN.search(sql)
    if m:
        return sql[:m.start()] + "IN (" + ", ".join("?" * n) + ")" + sql[m.end():]
    raise ValueError(f"no VALUES (?, ...) or IN (?) to widen: {sql}")


_COPY_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f",
                 "v": "\v"}
_COPY_ESCAPE = re.compile(r"\\(.)")


def copy_rows(data: bytes, types: Sequence[Any]) -> list[tuple[Any, ...]]:
    """COPY text rows as tuples, each column through its converter (None stays None)."""
    rows = []
    for line in data.decode().split("\n"):
        if not line:
            continue
        fields = line.split("\t")
        rows.append(tuple(None if f == "\\N" else conv(_unescape(f))
                          for f, conv in zip(fields, types, strict=True)))
    return rows


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), text)


class PgStoreError(sqlite3.OperationalError):
    """A PostgreSQL failure, raised as the store error the daemon already handles for SQLite
    (a failed commit is held and retried; a failed start names the store)."""


def connect_kwargs(node: str) -> dict[str, Any]:
    """Timeouts and keepalives so that a dead server is noticed in seconds, never waited on."""
    return {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
        "tcp_user_timeout": STATEMENT_TIMEOUT_MS,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        "application_name": f"logwatchd:{node}"[:63],
    }


def open_connection(conninfo: str, node: str) -> Any:
    """A psycopg 3 connection in autocommit (the store opens its transactions itself)."""
    import psycopg

    return psycopg.connect(conninfo, autocommit=True, **connect_kwargs(node))


class HangGuard:
    """Ends a call on a hung server: a stopped or wedged postgres still has its kernel ACK
    our packets, so neither TCP timeouts nor statement_timeout end the wait. One watcher
    thread per connection (it only sleeps and, past the deadline, shuts the socket down,
    which makes the blocked call fail); the daemon's own work stays on its one thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.fired = 0

    def arm(self, fd: int, seconds: float) -> None:
        with self._lock:
            self._fd, self._deadline = fd, time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="pg-hang-guard",
                                                daemon=True)
                self._thread.start()

    def disarm(self) -> None:
        with self._lock:
            self._deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(GUARD_STEP)
            with self._lock:
                if self._deadline is None or time.monotonic() < self._deadline:
                    continue
                self._deadline = None
                self.fired += 1
                try:
                    # shutdown() acts on the socket itself, so a duplicate fd is enough.
                    with socket.socket(fileno=os.dup(self._fd or -1)) as sock:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class PgConnection:
    """Reconnects on the next call after the server went away; never retries a statement."""

    def __init__(self, conninfo: str, node: str) -> None:
        self.conninfo = conninfo
        self.node = node
        self._conn: Any = None
        self._failed_at: float | None = None
        self._in_tx = False     # a BEGIN is open on _conn
        self._broken = False    # ... and _conn died under it: only ROLLBACK may follow
        self.guard = HangGuard()
        self._connection()   # the first connection's failure is the caller's (start) error

    def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._failed_at is not None and time.monotonic() - self._failed_at < FAIL_FAST:
            raise PgStoreError("postgresql: unreachable (retrying shortly)")
        try:
            self._conn = open_connection(self.conninfo, self.node)
        except psycopg.Error as exc:
            self._failed_at = time.monotonic()
            raise PgStoreError(f"postgresql: {exc}".strip()) from exc
        self._failed_at = None
        return self._conn

    def _run(self, call: Any) -> Any:
        import psycopg

        conn = self._connection()
        self.guard.arm(conn.pgconn.socket, HANG_TIMEOUT)
        try:
            return call(conn)
        except psycopg.Error as exc:
            if conn.closed or isinstance(exc, psycopg.OperationalError):
                self._drop()
            raise PgStoreError(f"postgresql: {exc}".strip()) from exc
        finally:
            self.guard.disarm()

    def _drop(self) -> None:
        self._failed_at = time.monotonic()
        self._broken = self._in_tx
        try:
            if self._conn is not None:
                self._conn.close()
        finally:
            self._conn = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        word = sql.strip().split(None, 1)[0].upper() if sql.strip() else ""
        if word in ("ROLLBACK", "COMMIT") and self._broken:
            self._in_tx = self._broken = False
            if word == "COMMIT":
                raise PgStoreError("postgresql: connection lost in the transaction")
            return None   # the transaction died with its connection
        self._check_broken()
        query = to_postgresql(sql)
        cur = self._run(lambda conn: conn.execute(query, tuple(params)))
        if word == "BEGIN":
            self._in_tx = True
        elif word in ("COMMIT", "ROLLBACK"):
            self._in_tx = False
        return cur

    def _check_broken(self) -> None:
        # A new connection would run the rest of the transaction's statements in autocommit.
        if self._broken:
            raise PgStoreError("postgresql: connection lost in the transaction")

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._check_broken()
        query = to_postgresql(sql)
        batch = [tuple(r) for r in rows]
        if batch:
            self._run(lambda conn: conn.cursor().executemany(query, batch))

    def execute_rows(self, sql: str, rows: Sequence[Sequence[Any]], chunk: int = 500) -> None:
        """executemany as multi-row statements of `chunk` rows: the one `VALUES (?, ...)`
        group is repeated, or `IN (?)` widened (one round trip per chunk, not per row). The
        caller guarantees unique conflict keys in rows (PostgreSQL refuses to update a row
        twice in one statement)."""
        self._check_broken()
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            query = to_postgresql(_widen(sql, len(part)))
            params = tuple(v for row in part for v in row)
            self._run(lambda conn, q=query, p=params: conn.execute(q, p))

    def copy_out(self, sql: str) -> bytes:
        """The rows of a SELECT in COPY's text format: one transfer, no per-value decoding
        (what makes reading 100,000 bans at start cheap with psycopg's Python libpq layer)."""
        self._check_broken()
        query = f"COPY ({to_postgresql(sql)}) TO STDOUT"

        def run(conn: Any) -> bytes:
            with conn.cursor().copy(query) as copy:
                return b"".join(bytes(block) for block in copy)
        return self._run(run)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        conn = self._conn
        if self._broken:
            return True   # until the ROLLBACK that ends the lost transaction
        return (conn is not None and not conn.closed
                and conn.info.transaction_status != TransactionStatus.IDLE)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
