"""Restarts: clean stop and kill -9 of a child process running the tailer, with rotations
(real logrotate, create and copytruncate) while it is down; exactly-once across them."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatch.sources import FileTailer
from logwatch.state.store import Store

ROOT = str(Path(__file__).resolve().parent.parent)
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"

# The child tails one file. "atomic": each chunk is recorded in the same SQLite transaction as
# the positions that include it, so a kill -9 can neither lose nor replay a line. "periodic":
# positions saved once a second apart from the data, as a daemon that does not commit per
# chunk would: a kill -9 may then replay what was delivered since the last save.
CHILD = r"""
import selectors, sys, time
sys.path.insert(0, sys.argv[1])
from logwatch.state.store import Store
from logwatch.sources import FileTailer
db, path, mode = sys.argv[2], sys.argv[3], sys.argv[4]
store = Store(db)
store.db.execute("CREATE TABLE IF NOT EXISTS consumed (seq INTEGER PRIMARY KEY, line BLOB)")
tailer = None
def consume(name, chunk):
    rows = [(line,) for line in chunk.split(b"\n")[:-1]]
    with store.transaction():
        store.db.executemany("INSERT INTO consumed (line) VALUES (?)", rows)
        if mode == "atomic":
            store.save_positions(tailer.positions())
tailer = FileTailer([path], on_chunk=consume, store=store, from_start=True)
tailer.process()
sel = selectors.DefaultSelector()
sel.register(tailer.fileno(), selectors.EVENT_READ)
next_save = time.monotonic() + 1
while True:
    if sel.select(0.05):
        tailer.process()
    if mode == "periodic" and time.monotonic() >= next_save:
        tailer.save_positions()
        next_save = time.monotonic() + 1
"""


class Writer:
    """Appends numbered lines, opening the path for each batch (so it follows rotations)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = 0

    def write(self, count: int) -> None:
        data = b"".join(b"%08d status=sent to=<u%d@example.org>\n" % (self.n + i, i)
                        for i in range(count))
        with open(self.path, "ab") as f:
            f.write(data)
        self.n += count


def logrotate(tmp: Path, log: Path, method: str) -> None:
    conf = tmp / f"lr-{method}.conf"
    conf.write_text(f"{log} {{\n    rotate 100\n    {method}\n    nocompress\n}}\n")
    subprocess.run([LOGROTATE, "-f", "-s", str(tmp / "lr.state"), str(conf)], check=True,
                   timeout=30)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def consumed(db: Path) -> list[bytes]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT line FROM consumed ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_consumed(db: Path, n: int, timeout: float = 20) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        got = consumed(db)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def expected(n: int) -> list[bytes]:
    return [b"%08d status=sent" % i for i in range(n)]


def start(children: list, db: Path, log: Path, mode: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, ROOT, str(db), str(log), mode])
    children.append(p)
    return p


def run_and_kill(child: subprocess.Popen[bytes], w: Writer, batches: int) -> None:
    """Write while the child tails, and kill -9 it in the middle of the stream."""
    for i in range(batches):
        w.write(300)
        time.sleep(0.01)
        if i == batches // 2:
            child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.slow
def test_kill9_with_rotations_while_down_exactly_once(tmp_path: Path, children) -> None:
    log, db = tmp_path / "mail.log", tmp_path / "state.db"
    w = Writer(log)
    w.write(5000)
    c = start(children, db, log, "atomic")
    time.sleep(0.3)
    run_and_kill(c, w, 60)
    w.write(1000)
    logrotate(tmp_path, log, "create")          # rename rotation while down
    w.write(2000)

    c = start(children, db, log, "atomic")
    run_and_kill(c, w, 60)
    w.write(500)
    logrotate(tmp_path, log, "copytruncate")    # truncation while down: rest is in the copy
    w.write(700)

    c = start(children, db, log, "atomic")
    run_and_kill(c, w, 40)
    w.write(300)
    logrotate(tmp_path, log, "create")          # two rotations while down
    w.write(300)
    logrotate(tmp_path, log, "create")
    w.write(300)

    c = start(children, db, log, "atomic")
    for _ in range(20):
        w.write(200)
        time.sleep(0.01)
    got = wait_consumed(db, w.n)
    c.send_signal(signal.SIGKILL)
    c.wait()
    assert len(got) == w.n
    assert [g[:20] for g in got] == expected(w.n)


@pytest.mark.slow
def test_kill9_periodic_save_loses_nothing(tmp_path: Path, children) -> None:
    """Positions saved once a second apart from the data: at-least-once, no line lost; a kill
    -9 may replay what came after the last save, as one contiguous stretch."""
    log, db = tmp_path / "mail.log", tmp_path / "state.db"
    w = Writer(log)
    w.write(3000)
    c = start(children, db, log, "periodic")
    time.sleep(1.5)
    run_and_kill(c, w, 50)
    w.write(1000)
    logrotate(tmp_path, log, "create")
    w.write(1000)
    c = start(children, db, log, "periodic")
    got = wait_consumed(db, w.n)
    time.sleep(0.3)
    got = consumed(db)
    c.send_signal(signal.SIGKILL)
    c.wait()
    nums = [int(g[:8]) for g in got]
    assert set(nums) == set(range(w.n))
    # Any replay restarts at an earlier line and then runs on in order.
    dups = len(nums) - w.n
    restarts = sum(1 for a, b in zip(nums, nums[1:], strict=False) if b != a + 1)
    assert restarts <= 1, restarts
    print(f"replayed after kill -9 with periodic saves: {dups} lines")


def pump(t: FileTailer, sink: list[bytes], n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(b"".join(sink).split(b"\n")) - 1 < n:
        assert time.monotonic() < deadline, "timeout"
        t.process()
        time.sleep(0.01)


def lines(sink: list[bytes]) -> list[bytes]:
    return [x[:20] for x in b"".join(sink).split(b"\n")[:-1]]


def reopen(log: Path, sink: list[bytes], store: Store, from_start: bool = False) -> FileTailer:
    """A tailer of `log` that appends its chunks to `sink` and keeps positions in `store`."""
    return FileTailer([str(log)], on_chunk=lambda n, c: sink.append(c), store=store,
                      from_start=from_start)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def test_clean_stop_rename_while_down_with_partial_line(tmp_path: Path, store: Store) -> None:
    log = tmp_path / "mail.log"
    w = Writer(log)
    w.write(100)
    sink: list[bytes] = []
    t = reopen(log, sink, store, from_start=True)
    try:
        pump(t, sink, 100)
        with open(log, "ab") as f:
            f.write(b"%08d status=sent half" % w.n)    # incomplete at stop
    finally:
        t.close()
    with open(log, "ab") as f:
        f.write(b" rest\n")
    w.n += 1
    w.write(50)
    os.rename(log, str(log) + ".1")
    w.write(70)
    t = reopen(log, sink, store)
    try:
        pump(t, sink, w.n)
        t.process()
        assert lines(sink) == expected(w.n)
        assert b"half rest" in b"".join(sink)
    finally:
        t.close()


def test_rotated_file_gone_reads_new_file_from_start(tmp_path: Path, store: Store,
                                                     caplog) -> None:
    log = tmp_path / "mail.log"
    w = Writer(log)
    w.write(10)
    sink: list[bytes] = []
    t = reopen(log, sink, store, from_start=True)
    pump(t, sink, 10)
    t.close()
    w.write(5)                                    # these are lost with the deleted file
    os.unlink(log)
    w.write(7)
    t = reopen(log, sink, store)
    try:
        pump(t, sink, 17)
        assert [int(x[:8]) for x in lines(sink)] == [*range(10), *range(15, 22)]
        assert any("resume-lost" in r.getMessage() for r in caplog.records)
    finally:
        t.close()


def test_same_inode_new_content_is_read_from_start(tmp_path: Path, store: Store) -> None:
    """Truncated and rewritten past the saved offset while down, no copy: the first-line
    fingerprint differs, so the file is read from 0 instead of from a wrong offset."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"first line A\n" + b"x" * 50 + b"\n")
    sink: list[bytes] = []
    t = reopen(log, sink, store, from_start=True)
    t.process()
    t.close()
    with open(log, "r+b") as f:                   # same inode, other content, longer
        f.truncate(0)
        f.write(b"second file B\n" + b"y" * 100 + b"\nlast\n")
    sink.clear()
    t = reopen(log, sink, store)
    try:
        t.process()
        assert b"".join(sink) == b"second file B\n" + b"y" * 100 + b"\nlast\n"
    finally:
        t.close()


def test_unchanged_file_resumes_exactly(tmp_path: Path, store: Store) -> None:
    log = tmp_path / "mail.log"
    w = Writer(log)
    w.write(1000)
    sink: list[bytes] = []
    for _ in range(3):                            # repeated stop/start: nothing re-read
        t = reopen(log, sink, store, from_start=True)
        t.process()
        t.close()
        w.write(10)
    t = reopen(log, sink, store)
    t.process()
    t.close()
    assert lines(sink) == expected(w.n)
