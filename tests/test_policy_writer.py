"""The policy side's writer process (daemon/policywriter.py) with a real SQLite store: what it
is sent reaches the store through its own connection, it keeps the WAL checkpoints off the
loop's connection, reports a failed write and goes on, and finishes what it was sent when the
daemon is killed (kill -9). Also the loop serving urgent (policy) fds first, and the quota
snapshot the loop hands over being a copy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path

import psutil
import pytest

from logwatch.daemon.loop import Loop
from logwatch.daemon.policywriter import Batch, PolicyWriter
from logwatch.engine.policy import PolicyRequest
from logwatch.engine.policy.quotas import QuotaCheck, QuotaSpec
from logwatch.state.policystore import AuditRow, PolicyStore
from logwatch.state.store import Store

REPO = Path(__file__).resolve().parent.parent


def audit(n: int) -> AuditRow:
    return AuditRow(1000.0 + n, f"i{n}", "", "192.0.2.7", "", "", "", f"r{n}@x", "quota:q",
                    "DEFER_IF_PERMIT 4.7.1 Quota q exceeded")


def counter(key: str, value: int) -> tuple[str, str, float, array]:
    return ("q", key, 5.0, array("I", [value] * 13))


@pytest.fixture
def writer(tmp_path: Path):
    main = Store(tmp_path / "state.db")
    errors: list[str] = []
    w = PolicyWriter(f"sqlite://{tmp_path / 'state.db'}", "", str(tmp_path / "actions.log"),
                     main, errors.append)
    w.start()
    w.errors = errors
    w.main_store = main
    try:
        yield w
    finally:
        w.close()
        main.close()


def autocheckpoint(store: Store) -> int:
    return store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def test_batches_reach_the_store_and_the_actions_log(writer, tmp_path: Path) -> None:
    main = writer.main_store
    assert autocheckpoint(main) == 0          # while the writer runs, only it checkpoints
    writer.put(Batch((audit(1),), (counter("192.0.2.7", 1), counter("gone", 0)[:3] + (None,))))
    writer.put(Batch((), tuple(counter(f"10.0.0.{i}", 2) for i in range(450)), checkpoint=True))
    assert writer.wait(10)
    rows = dict((k, c) for _, k, _, c in PolicyStore(main).load_quota_counts())
    assert rows["192.0.2.7"] == ",".join(["1"] * 13)
    assert len(rows) == 451 and "gone" not in rows          # None: the key's row is deleted
    assert [r.instance for r in PolicyStore(main).verdicts()] == ["i1"]
    assert "action:policy-verdict" in (tmp_path / "actions.log").read_text()
    assert writer.errors == []
    child = writer.proc.pid
    writer.close()
    assert autocheckpoint(main) == 1000 and not psutil.pid_exists(child)


def test_a_failed_write_is_reported_and_the_next_one_goes_through(writer) -> None:
    main = writer.main_store
    main.db.execute("ALTER TABLE policy_quota_counts RENAME TO hidden")
    writer.put(Batch((), (counter("a", 1),)))
    assert writer.wait(10)
    assert writer.errors and "policy_quota_counts" in writer.errors[0]
    main.db.execute("ALTER TABLE hidden RENAME TO policy_quota_counts")
    writer.put(Batch((), (counter("b", 1),)))
    assert writer.wait(10) and writer.alive
    assert [k for _, k, _, _ in PolicyStore(main).load_quota_counts()] == ["b"]


def test_a_store_it_cannot_open_fails_the_start(tmp_path: Path) -> None:
    main = Store(tmp_path / "state.db")
    errors: list[str] = []
    (tmp_path / "dir.db").mkdir()
    w = PolicyWriter(f"sqlite://{tmp_path / 'dir.db'}", "", None, main, errors.append)
    try:
        with pytest.raises(OSError):
            w.start()
        assert errors and w.proc is None
        assert autocheckpoint(main) == 1000     # the loop keeps checkpointing itself
    finally:
        w.close()
        main.close()


KILLED = """
import os, signal, sys
from array import array
from logwatch.daemon.policywriter import Batch, PolicyWriter
from logwatch.state.store import Store
main = Store(sys.argv[1])
w = PolicyWriter("sqlite://" + sys.argv[1], "", None, main, print)
w.start()
for b in range(20):
    w.put(Batch((), tuple(("q", f"k{b}.{i}", 5.0, array("I", [b + 1] * 13))
                           for i in range(250))))
print(w.proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_of_the_daemon_loses_nothing_it_sent(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    run = subprocess.run([sys.executable, "-c", KILLED, str(db)], capture_output=True,
                         text=True, timeout=60, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == -signal.SIGKILL, run.stderr
    child = int(run.stdout.split()[-1])
    try:
        deadline = time.monotonic() + 20
        while psutil.pid_exists(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(child)   # it stopped at the end of its input
    finally:
        if psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)
    store = Store(db)
    try:
        assert len(PolicyStore(store).load_quota_counts()) == 20 * 250
    finally:
        store.close()


def test_the_loop_serves_urgent_fds_first(clock) -> None:
    class Urgent:
        urgent = True

        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, mask: int) -> None:
            order.append(self.name)

    order: list[str] = []
    loop = Loop(clock)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        loop.register(pairs[0][0], lambda m: order.append("log"))
        loop.register(pairs[1][0], Urgent("policy-1"))
        loop.register(pairs[2][0], Urgent("policy-2"))
        for _, w in pairs:
            w.send(b"x")
        loop.turn([])
        assert order[-1] == "log" and sorted(order[:2]) == ["policy-1", "policy-2"]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_the_snapshot_is_a_copy_taken_a_slice_at_a_time(clock) -> None:
    q = QuotaCheck([QuotaSpec("q", "client_address", "recipients", 100, 60.0)])
    for i in range(5):
        q.decide(PolicyRequest({"protocol_state": "RCPT", "client_address": f"192.0.2.{i}",
                                "instance": f"i{i}", "recipient": "r"}), clock(), True)
    first = q.take_dirty_copies(3)
    assert len(first) == 3 and q.dirty_count() == 2
    name, key, _, row = first[0]
    before = list(row)
    q.decide(PolicyRequest({"protocol_state": "RCPT", "client_address": key,
                            "instance": "again", "recipient": "r"}), clock(), True)
    assert list(row) == before != q.windows[0].row(key)       # the loop's later counting
    assert len(q.take_dirty_copies(10)) == 3                  # the 2 left + the one again
