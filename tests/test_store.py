"""The SQLite store: WAL, schema versions and migrations, round trips, rollback, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import logwatch.state.store as store_mod
from logwatch.engine.model import Ban, Grant, Position
from logwatch.state.store import SCHEMA_VERSION, Store, StoreError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()


def test_wal_mode_and_schema_version(store: Store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION == len(store_mod.MIGRATIONS)
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"grants", "bans", "offenders", "positions", "cursors"} <= tables


def test_creates_parent_directory(tmp_path: Path):
    s = Store(tmp_path / "a" / "b" / "state.db")
    s.close()
    assert (tmp_path / "a" / "b" / "state.db").exists()


def test_migrates_from_zero_and_keeps_existing_data(tmp_path: Path):
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE unrelated (x)")
    raw.execute("INSERT INTO unrelated VALUES (42)")
    raw.commit()
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 0
    raw.close()
    s = Store(path)
    try:
        assert s.schema_version == SCHEMA_VERSION
        assert s.db.execute("SELECT x FROM unrelated").fetchone() == (42,)
    finally:
        s.close()
    # Reopening does not migrate again (would fail: tables exist).
    Store(path).close()


def test_later_migration_applies_on_reopen(tmp_path: Path, monkeypatch):
    path = tmp_path / "state.db"
    Store(path).close()
    monkeypatch.setattr(store_mod, "MIGRATIONS",
                        [*store_mod.MIGRATIONS, "ALTER TABLE grants ADD COLUMN note TEXT"])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    s = Store(path)
    try:
        assert s.schema_version == SCHEMA_VERSION + 1
        cols = [r[1] for r in s.db.execute("PRAGMA table_info(grants)")]
        assert "note" in cols
    finally:
        s.close()


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch):
    path = tmp_path / "state.db"
    Store(path).close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", [
        *store_mod.MIGRATIONS, "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1)"])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        Store(path)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert "half" not in names
    finally:
        raw.close()


def test_newer_schema_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 5
        assert raw.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        raw.close()


def test_corrupt_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_grants_round_trip(store: Store):
    grants = [Grant("192.0.2.7", "bob", "imap", 100.0, 1900.0),
              Grant("2001:db8::1", None, None, 5.5, 6.5)]
    store.put_grants(grants)
    assert store.load_grants() == sorted(grants, key=lambda g: g.ip)
    store.put_grants([Grant("192.0.2.7", "bob", "pop3", 200.0, 2000.0)])   # replace
    assert store.load_grants()[0].expires_at == 2000.0 and len(store.load_grants()) == 2
    store.delete_grants(["192.0.2.7", "203.0.113.1"])
    assert [g.ip for g in store.load_grants()] == ["2001:db8::1"]


def test_bans_round_trip(store: Store):
    bans = [Ban("192.0.2.7/32", 10.0, 3610.0, 5.0, {"user-unknown": 3, "relay-denied": 1}, 2),
            Ban("2001:db8:1:2::/64", 20.0, None, 0.0, {}, 1, "manual")]
    store.put_bans(bans)
    assert store.load_bans() == sorted(bans, key=lambda b: b.net)
    store.delete_bans(["192.0.2.7/32"])
    assert [b.net for b in store.load_bans()] == ["2001:db8:1:2::/64"]
    assert store.load_bans()[0].expires_at is None


def test_offenders_positions_cursors(store: Store):
    store.put_offenders([("192.0.2.7/32", 3, 123.5), ("2001:db8::/64", 1, 5.0)])
    store.put_offenders([("192.0.2.7/32", 4, 200.0)])
    assert sorted(store.load_offenders()) == [("192.0.2.7/32", 4, 200.0),
                                              ("2001:db8::/64", 1, 5.0)]
    pos = Position("/var/log/mail.log", 1234, 2049, 987654321, "ab" * 32)
    store.save_positions([pos])
    assert store.load_positions() == {"/var/log/mail.log": pos}
    assert store.get_cursor("journal") is None
    store.set_cursor("journal", "s=abc;i=1")
    store.set_cursor("journal", "s=abc;i=2")
    assert store.get_cursor("journal") == "s=abc;i=2"


def test_transaction_rollback_and_nesting(store: Store):
    store.put_grants([Grant("192.0.2.1", None, None, 1.0, 2.0)])
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put_grants([Grant("192.0.2.2", None, None, 1.0, 2.0)])
            with store.transaction():
                store.put_bans([Ban("192.0.2.3/32", 1.0, None)])
            store.delete_grants(["192.0.2.1"])
            raise RuntimeError("boom")
    assert [g.ip for g in store.load_grants()] == ["192.0.2.1"]
    assert store.load_bans() == []
    with store.transaction():
        store.put_grants([Grant("192.0.2.2", None, None, 1.0, 2.0)])
        store.put_bans([Ban("192.0.2.3/32", 1.0, None)])
    assert len(store.load_grants()) == 2 and len(store.load_bans()) == 1


def test_failed_commit_leaves_store_usable(store: Store):
    # A deferred foreign key fails at COMMIT time, like a full disk would.
    store.db.execute("PRAGMA foreign_keys=ON")
    store.db.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
    store.db.execute("CREATE TEMP TABLE child (pid INTEGER REFERENCES parent(id) "
                     "DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.put_grants([Grant("192.0.2.5", None, None, 1.0, 2.0)])
            store.db.execute("INSERT INTO child VALUES (7)")
    assert not store.db.in_transaction
    assert store.load_grants() == []
    store.put_grants([Grant("192.0.2.6", None, None, 1.0, 2.0)])
    assert [g.ip for g in store.load_grants()] == ["192.0.2.6"]


def test_other_connection_sees_only_committed(store: Store, tmp_path: Path):
    other = sqlite3.connect(tmp_path / "state.db")
    try:
        with store.transaction():
            store.put_grants([Grant("192.0.2.9", None, None, 1.0, 2.0)])
            assert other.execute("SELECT count(*) FROM grants").fetchone()[0] == 0
        assert other.execute("SELECT count(*) FROM grants").fetchone()[0] == 1
    finally:
        other.close()


CHILD = textwrap.dedent("""
    import sys, time
    from logwatch.engine.model import Grant
    from logwatch.state.store import Store
    s = Store(sys.argv[1])
    mode = sys.argv[2]
    if mode == "pending":
        s.put_grants([Grant("192.0.2.1", "bob", "imap", 1.0, 2.0)])
        print("committed", flush=True)
        with s.transaction():
            s.put_grants([Grant("192.0.2.2", "eve", "imap", 1.0, 2.0)])
            print("pending", flush=True)
            time.sleep(60)
    else:
        i = 0
        while True:
            with s.transaction():
                s.put_grants([Grant(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", None, None,
                                    float(i), float(i) + 1) for i in range(i, i + 50)])
            i += 50
            print(i, flush=True)
""")


def run_child(path: Path, mode: str, lines_before_kill: int) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode], env=env,
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while len(lines) < lines_before_kill:
            line = proc.stdout.readline()
            assert line, "child died early"
            lines.append(line.strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    return lines


def test_kill_9_keeps_committed_loses_pending(tmp_path: Path):
    path = tmp_path / "state.db"
    assert run_child(path, "pending", 2) == ["committed", "pending"]
    s = Store(path)
    try:
        assert [g.ip for g in s.load_grants()] == ["192.0.2.1"]
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        s.put_grants([Grant("192.0.2.3", None, None, 1.0, 2.0)])       # still writable
    finally:
        s.close()


def test_kill_9_mid_stream_of_commits(tmp_path: Path):
    path = tmp_path / "state.db"
    lines = run_child(path, "loop", 40)
    s = Store(path)
    try:
        count = s.db.execute("SELECT count(*) FROM grants").fetchone()[0]
        # Everything the child reported committed is there; a later batch may be too.
        assert count >= int(lines[-1]) and count % 50 == 0
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        s.close()


def test_accounting_rows_of_an_older_store_are_kept_as_this_machine_s(tmp_path: Path,
                                                                     monkeypatch):
    """Migrations 6 and 7 (accounting and quota counters keyed by node) keep a single
    machine's open messages, records, marks and quota counters, under the node key ''."""
    from logwatch.state import accounting

    path = tmp_path / "state.db"
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 5)
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO acct_open VALUES ('mx', 'Q1', '{\"a\": 1}')")
    raw.execute("INSERT INTO acct_records VALUES (7, 2.0, 'bob', '192.0.2.7', '[]')")
    raw.execute("INSERT INTO acct_meta VALUES ('next_seq', 8)")
    raw.execute("INSERT INTO policy_quota_counts VALUES ('q', 'bob', 5.0, '1,2')")
    raw.commit()
    raw.close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION)
    s = Store(path)
    try:
        assert s.schema_version == SCHEMA_VERSION
        assert accounting.marks(s) == {"next_seq": 8}
        assert accounting.load_open(s) == [("mx", "Q1", {"a": 1})]
        assert list(s.db.execute("SELECT node, seq FROM acct_records")) == [("", 7)]
        from logwatch.state.policystore import PolicyStore  # migration 7: quotas by node

        assert PolicyStore(s).load_quota_counts() == [("q", "bob", 5.0, "1,2")]
    finally:
        s.close()
