"""The store on a real PostgreSQL server (started by the test): the SQLite schema and
migrations translated, per-node rows, the deciding node, concurrent first starts, a lost
connection; the translation and the peers' payloads as pure units."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime

import pytest
from pgserver import postgres_server

from logwatch.daemon.fleet import _chunks, _event
from logwatch.engine.model import Ban, Grant, Position
from logwatch.state.backends import PAYLOAD_MAX, announcements, display_url, url_problem
from logwatch.state.dialect import to_postgresql
from logwatch.state.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def fresh_db(pg):  # type: ignore[no-untyped-def]
    """A database of its own for one test: its URL."""
    name = f"t{threading.get_ident() % 10**6}_{datetime.now().microsecond}"
    pg.sql(f"CREATE DATABASE {name}", db="postgres")
    try:
        yield pg.url(name)
    finally:
        pg.sql(f"DROP DATABASE {name} WITH (FORCE)", db="postgres")


def test_translation_is_mechanical() -> None:
    assert to_postgresql("INSERT INTO t (a, user) VALUES (?, ?) ON CONFLICT (a) DO UPDATE "
                         "SET user = excluded.user") == \
        'INSERT INTO t (a, "user") VALUES (%s, %s) ON CONFLICT (a) DO UPDATE SET "user" = ' \
        'excluded."user"'
    assert to_postgresql("CREATE TABLE q (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, "
                         "offset INTEGER, note TEXT DEFAULT 'a ? user 5%')") == \
        'CREATE TABLE q (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION, "offset" BIGINT, ' \
        "note TEXT DEFAULT 'a ? user 5%%')"
    assert to_postgresql("CREATE TABLE r (id INTEGER PRIMARY KEY, n INTEGER)") == \
        "CREATE TABLE r (id BIGSERIAL PRIMARY KEY, n BIGINT)"
    assert to_postgresql("INSERT OR IGNORE INTO t (a) VALUES (?)") == \
        "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING"
    with pytest.raises(ValueError, match="ON CONFLICT"):
        to_postgresql("INSERT OR REPLACE INTO t VALUES (?)")


def test_widen() -> None:
    from logwatch.state.pgdb import _widen

    assert _widen("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO NOTHING", 3) == \
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT (a) DO NOTHING"
    assert _widen("DELETE FROM t WHERE a IN (?)", 3) == "DELETE FROM t WHERE a IN (?, ?, ?)"
    with pytest.raises(ValueError):
        _widen("DELETE FROM t WHERE a = ?", 2)


def test_urls() -> None:
    assert url_problem("sqlite:///var/lib/logwatchd/state.db") is None
    assert url_problem("postgresql://u:p@db/logwatchd") is None
    assert url_problem("sqlite://relative.db") and url_problem("mysql://x")
    assert display_url("postgresql://u:secret@db:5433/lw") == "postgresql://u:***@db:5433/lw"


def test_round_trips_and_node_keys(fresh_db: str) -> None:
    a, b = Store(url=fresh_db, node="a"), Store(url=fresh_db, node="b")
    try:
        assert a.schema_version == b.schema_version == SCHEMA_VERSION and a.shared
        a.put_grants([Grant("192.0.2.7", "bob", "imap", 1.0, 2e9)])
        b.put_grants([Grant("192.0.2.8", "eve", "pop3", 1.0, 2e9)])
        a.put_bans([Ban("198.51.100.0/24", 1.0, None, 5.0, {"user-unknown": 5}, 1)])
        a.save_positions([Position("/var/log/mail.log", 1, 2, 3, "fp")])
        b.save_positions([Position("/var/log/mail.log", 7, 8, 9, "gp")])
        a.set_firewall_identity(["iptables", "LOGWATCHD"])
        # A node loads its own grants and positions, everyone's bans.
        assert [g.ip for g in a.load_grants()] == ["192.0.2.7"]
        assert [g.ip for g in b.load_grants()] == ["192.0.2.8"]
        assert b.load_positions()["/var/log/mail.log"].offset == 9
        assert a.load_positions()["/var/log/mail.log"].offset == 3
        assert b.load_bans() == a.load_bans() and b.ban_nodes() == {"198.51.100.0/24": "a"}
        assert b.get_firewall_identity() is None
        assert sorted((g.ip, n) for g, n in b.live_grants(100.0)) == \
            [("192.0.2.7", "a"), ("192.0.2.8", "b")]
        # b's expiry of a grant a made later does not delete a's row.
        b.delete_grants(["192.0.2.7"])
        assert [g.ip for g in a.load_grants()] == ["192.0.2.7"]
        # The full load goes through COPY's text format: escapes and NULLs come back intact.
        odd = Ban("2001:db8::/64", 1.25, None, 0.1, {"we\\ird\tkey\n": 2, "ü": 1}, 7,
                  "man\\ual\tx")
        a.put_bans([odd])
        assert [x for x in b.load_bans() if x.net == odd.net] == [odd]
        a.delete_bans([odd.net])
        # A node that never completed a start here is "fresh" (it adopts its live entries).
        a.mark_started()
        again, joining = Store(url=fresh_db, node="a"), Store(url=fresh_db, node="c")
        assert not again.fresh and joining.fresh
        again.close()
        joining.close()
        # Many rows per statement: a key given twice is written once, the last one wins.
        many = [Ban(f"10.0.{i // 250}.{i % 250}/32", 1.0, None, 1.0, {}, 1) for i in range(1203)]
        a.put_bans([*many, Ban("10.0.0.0/32", 2.0, None, 9.0, {}, 3)])
        assert len(b.load_bans()) == 1204 and b.load_bans(["10.0.0.0/32"])[0].offences == 3
        a.delete_bans([x.net for x in many])
        assert [x.net for x in b.load_bans()] == ["198.51.100.0/24"]
        # A reset on one node leaves the fleet's other rows alone.
        b.replace_state([], [], [])
        assert a.load_bans() and [g.ip for g in a.load_grants()] == ["192.0.2.7"]
    finally:
        a.close()
        b.close()


def test_nodes_starting_together_migrate_once(fresh_db: str) -> None:
    stores, errors = [], []

    def start(name: str) -> None:
        try:
            stores.append(Store(url=fresh_db, node=name))
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors and len(stores) == 4
        assert {s.schema_version for s in stores} == {SCHEMA_VERSION}
    finally:
        for s in stores:
            s.close()


def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="postgresql"):
        Store(url="postgresql://nobody@/none?host=/nonexistent&port=1", node="a")


def test_lost_connection_fails_the_transaction_not_half_of_it(pg, fresh_db: str) -> None:  # type: ignore[no-untyped-def]
    s = Store(url=fresh_db, node="a")
    try:
        pid = s.db.execute("SELECT pg_backend_pid()").fetchone()[0]
        with pytest.raises(sqlite3.OperationalError):   # PgStoreError, as SQLite's
            with s.transaction():
                s.put_bans([Ban("203.0.113.1/32", 1.0, None, 1.0, {}, 1)])
                pg.sql("SELECT pg_terminate_backend(%s)", (pid,), db="postgres")
                s.put_bans([Ban("203.0.113.2/32", 1.0, None, 1.0, {}, 1)])
        assert not s.db.in_transaction
        # The next transaction reconnects (after the fail-fast second) and works.
        time.sleep(1.1)
        s.put_bans([Ban("203.0.113.3/32", 1.0, None, 1.0, {}, 1)])
        assert [b.net for b in s.load_bans()] == ["203.0.113.3/32"]
    finally:
        s.close()


def test_announcements_fit_and_hostile_payloads_are_skipped() -> None:
    nets = {f"2001:db8:{i:x}::/64" for i in range(3000)}
    payloads = announcements("a", nets, {"192.0.2.1/32"})
    assert all(len(p) < PAYLOAD_MAX + 100 for p in payloads)
    got = [json.loads(p) for p in payloads]
    assert set().union(*(set(g["b"]) for g in got)) == nets
    hits = [["2026-01-01T00:00:00", "user-unknown", "192.0.2.9", "x" * 256, None]] * 500
    ids = iter(range(10**6))
    chunks = _chunks("a", hits, lambda: f"1700000000.000000:{next(ids)}")
    assert all(len(p) < PAYLOAD_MAX for p, _n in chunks)
    assert sum(n for _p, n in chunks) == 500 and json.loads(chunks[-1][0])["i"].endswith(
        f":{len(chunks) - 1}")
    assert _event(["2026-01-01T00:00:00", "user-unknown", "192.0.2.9", "bob", "smtp"]).ip \
        == "192.0.2.9"
    for bad in (["x", "user-unknown", "192.0.2.9", None, None],
                ["2026-01-01T00:00:00", "login", "192.0.2.9", None, None],
                ["2026-01-01T00:00:00", "user-unknown", "192.0.2.9; rm -rf /", None, None],
                ["2026-01-01T00:00:00", "user-unknown", 42, None, None], "junk", None, [1]):
        assert _event(bad) is None
    assert len(_event(["2026-01-01T00:00:00", "user-unknown", "192.0.2.9", "u" * 5000,
                       None]).user) == 256


def test_a_migration_appended_for_sqlite_runs_on_postgresql(fresh_db: str, tmp_path,  # type: ignore[no-untyped-def]
                                                             monkeypatch) -> None:
    """What the other store users append (portable SQL, `?`, ON CONFLICT) works on both."""
    import logwatch.state.store as store_mod

    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, """
        CREATE TABLE quota (account TEXT PRIMARY KEY, sent INTEGER NOT NULL, since REAL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, account TEXT, verdict TEXT, at REAL)
    """])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    bump = ("INSERT INTO quota (account, sent, since) VALUES (?, ?, ?) ON CONFLICT (account) "
            "DO UPDATE SET sent = quota.sent + excluded.sent")
    for s in (Store(url=fresh_db, node="a"), Store(tmp_path / "state.db")):
        try:
            with s.transaction():
                for n in (3, 4):
                    s.db.execute(bump, ("bob@example.org", n, 1.5))
                s.db.execute("INSERT INTO audit (account, verdict, at) VALUES (?, ?, ?)",
                             ("bob@example.org", "50% over", 2.0))
            assert s.db.execute("SELECT sent FROM quota").fetchone()[0] == 7
            assert s.db.execute("SELECT id, verdict FROM audit").fetchall() == [(1, "50% over")]
        finally:
            s.close()


def test_a_hung_server_fails_the_call_instead_of_blocking(pg, fresh_db: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stopped backend (the kernel still ACKs): the hang guard shuts the socket."""
    import os
    import signal

    import logwatch.state.pgdb as pgdb

    monkeypatch.setattr(pgdb, "HANG_TIMEOUT", 1.0)
    s = Store(url=fresh_db, node="a")
    pid = s.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError):
            s.put_bans([Ban("203.0.113.1/32", 1.0, None, 1.0, {}, 1)])
        assert time.monotonic() - started < 5
        assert s.db.guard.fired == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(1.1)   # FAIL_FAST: then a new connection
    s.put_bans([Ban("203.0.113.2/32", 1.0, None, 1.0, {}, 1)])
    assert [b.net for b in s.load_bans()] == ["203.0.113.2/32"]
    s.close()


def test_the_policy_accounting_and_risk_tables_on_postgresql(fresh_db: str) -> None:
    """The other store users (policystore.py, accounting.py, risk's) run unchanged on the fleet's
    store: their portable SQL through the same connection and transactions."""
    from logwatch.engine.messages import MessageRecord
    from logwatch.state import accounting
    from logwatch.state.policystore import AuditRow, PolicyStore

    s = Store(url=fresh_db, node="a")
    try:
        policy = PolicyStore(s)
        with s.transaction():
            policy.put_verdicts([AuditRow(10.0, "i1", "Q1", "192.0.2.7", "host", "bob",
                                          "b@example.org", "r@example.net", "quota", "DEFER")])
            policy.put_quota_counts([("user-rcpt", "bob", 60.0, "1,3"),
                                     ("user-rcpt", "eve", 60.0, "1,0")])
        assert [v.sasl_username for v in policy.verdicts(user="BOB")] == ["bob"]
        # A shared store keeps an emptied row (the peers must see it change).
        assert sorted(policy.load_quota_counts()) == [("user-rcpt", "bob", 60.0, "1,3"),
                                                      ("user-rcpt", "eve", 60.0, "1,0")]
        assert policy.prune_verdicts(11.0) == 1
        record = MessageRecord("mx", "Q2", "192.0.2.8", "c", "bob", "PLAIN", "b@example.org",
                               (), 100, 0, "<m@x>", 1.0, 2.0, 3.0, "delivered", seq=1)
        accounting.save(s, [("mx", "Q3", {"a": 1})], [], [record], next_seq=2, written_seq=1)
        assert accounting.marks(s) == {"next_seq": 2, "written_seq": 1}
        assert [r.queue_id for r in accounting.records_after(s, 0)] == ["Q2"]
        assert accounting.load_open(s) == [("mx", "Q3", {"a": 1})]
        # Risk: suspensions, account windows, counts over time.
        from logwatch.engine.model import Suspension

        s.put_suspensions([Suspension("bob", 1.0, 2e9, 120.0, {"rcpts": 1.0}, 1, "auto")])
        assert [x.user for x in s.load_suspensions()] == ["bob"]
        # Put again (a longer one): the row is updated; read back by ID; deleted by ID.
        s.put_suspensions([Suspension("bob", 1.0, 3e9, 130.0, {"rcpts": 2.0}, 2, "auto"),
                           Suspension("eve", 1.0, 2e9, 99.0, {}, 1, "manual")])
        assert [(x.user, x.expires_at, x.offences, x.reason) for x in
                s.load_suspensions_of(["bob", "nobody"])] == [("bob", 3e9, 2, {"rcpts": 2.0})]
        s.delete_suspensions(["eve"])
        assert [x.user for x in s.load_suspensions()] == ["bob"]
        s.put_account_windows([("bob", {"m": [1, 2]}, 60.0)])
        assert s.load_account_windows() == [("bob", '{"m": [1, 2]}')]
        s.put_counts([("sent", 60, 2.0), ("sent", 60, 3.0)])
        assert s.count_series() == ["sent"]
    finally:
        s.close()


def test_accounting_is_kept_per_node_on_a_shared_store(fresh_db: str) -> None:
    """Two nodes number their records from 1 alike: both kept, each node's marks, open
    messages and unwritten records its own; the query lists the fleet's, with the node."""
    from logwatch.engine.messages import MessageRecord
    from logwatch.state import accounting

    def record(queue_id: str, seq: int, done: float) -> MessageRecord:
        return MessageRecord("mx", queue_id, "192.0.2.8", "c", "bob", "PLAIN", "b@example.org",
                             (), 100, 0, "<m@x>", 1.0, done, done, "delivered", seq=seq)

    a, b = Store(url=fresh_db, node="a"), Store(url=fresh_db, node="b")
    try:
        accounting.save(a, [("mx", "QA", {"n": "a"})], [], [record("A1", 1, 10.0)], 2, 0)
        accounting.save(b, [("mx", "QA", {"n": "b"})], [], [record("B1", 1, 20.0),
                                                             record("B2", 2, 30.0)], 3, 1)
        assert accounting.marks(a) == {"next_seq": 2, "written_seq": 0}
        assert accounting.marks(b) == {"next_seq": 3, "written_seq": 1}
        assert accounting.load_open(a) == [("mx", "QA", {"n": "a"})]
        assert [r.queue_id for r in accounting.records_after(a, 0)] == ["A1"]
        assert [r.queue_id for r in accounting.records_after(b, 1)] == ["B2"]
        assert [(n, r.queue_id) for n, r in accounting.query(a)] == \
            [("b", "B2"), ("b", "B1"), ("a", "A1")]
        # A's prune forgets only A's written records.
        accounting.set_marks(a, written_seq=1)
        assert accounting.prune(a, 100.0, 1) == 1
        assert [r.queue_id for r in accounting.records_after(b, 0)] == ["B1", "B2"]
        accounting.save(a, [], [("mx", "QA")], [], 2, 1)
        assert accounting.load_open(a) == [] and len(accounting.load_open(b)) == 1
    finally:
        a.close()
        b.close()
