"""JournalSource: record conversion, journalctl arguments (checked against the real journalctl
too), cursor resume and restart after death, with a fake journalctl on PATH."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sourceloop import pump

from logwatch.sources import JournalSource
from logwatch.sources.journal import record_to_line
from logwatch.state.store import Store

FAKEBIN = str(Path(__file__).resolve().parent / "fakebin")
BOOT = "9f0c4e1d2b8a4c3e8d7f6a5b4c3d2e1f"
SEQNUM_ID = "5e8c1b0f7d6a4e2c9b3a8f7e6d5c4b3a"


def record(i: int, message: object = None, ident: str = "postfix/smtpd",
           unit: str = "postfix@-.service", **extra: object) -> dict[str, object]:
    """A record shaped like `journalctl -o json` output (systemd 252)."""
    ts = 1700000000_000000 + i * 1_000_000
    rec: dict[str, object] = {
        "__CURSOR": f"s={SEQNUM_ID};i={i + 0x100:x};b={BOOT};m={ts % 10**9:x};t={ts:x};"
                    f"x={i * 7919:x}",
        "__REALTIME_TIMESTAMP": str(ts),
        "__MONOTONIC_TIMESTAMP": str(5_000_000 + i),
        "_BOOT_ID": BOOT,
        "PRIORITY": "6",
        "SYSLOG_FACILITY": "2",
        "SYSLOG_IDENTIFIER": ident,
        "SYSLOG_PID": str(1000 + i),
        "_PID": str(1000 + i),
        "_UID": "0",
        "_GID": "0",
        "_COMM": "smtpd",
        "_EXE": "/usr/lib/postfix/sbin/smtpd",
        "_CMDLINE": "smtpd -n smtp -t inet -u -c",
        "_SYSTEMD_UNIT": unit,
        "_TRANSPORT": "syslog",
        "_HOSTNAME": "mx1",
        "MESSAGE": message if message is not None
        else f"connect from unknown[192.0.2.{i % 250}] seq={i}",
    }
    rec.update(extra)
    return rec


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- conversion ------------------------------------------------------------------

def test_record_to_line(utc) -> None:
    assert record_to_line(record(0)) == (
        b"Nov 14 22:13:20 mx1 postfix/smtpd[1000]: connect from unknown[192.0.2.0] seq=0\n")


def test_record_to_line_bytes_newlines_and_missing_fields(utc) -> None:
    # MESSAGE as byte values: journalctl does this when it is not valid UTF-8.
    raw = list(b"bad \xff\xfe user=<x\x00y>")
    assert record_to_line(record(1, message=raw)).endswith(b": bad \xff\xfe user=<x\x00y>\n")
    line = record_to_line(record(2, message="one\ntwo\r\nthree\n"))
    assert line.endswith(b": one two three\n") and line.count(b"\n") == 1
    rec = record(3, SYSLOG_PID=None, _PID=None, _HOSTNAME=None)
    assert record_to_line(rec).startswith(b"Nov 14 22:13:23 localhost postfix/smtpd: ")
    rec = record(4, SYSLOG_IDENTIFIER=None)
    assert b" mx1 smtpd[1004]: " in record_to_line(rec)
    # A field occurring twice comes as a list of values.
    assert record_to_line(record(5, message=["first", "second"])).endswith(b": first\n")
    assert record_to_line(record(6, MESSAGE=None)) is None
    day = record(7, __REALTIME_TIMESTAMP=str(1701400000_000000))   # 1 December
    assert record_to_line(day).startswith(b"Dec  1 03:06:40 ")


# -- arguments -------------------------------------------------------------------

def make_args(tmp_path: Path, **kw) -> list[str]:
    src = JournalSource.__new__(JournalSource)
    src.journalctl, src.cursor, src.from_start = "journalctl", kw.get("cursor"), \
        kw.get("from_start", False)
    src.identifiers, src.units = kw.get("identifiers", []), kw.get("units", [])
    return JournalSource.args(src)


def test_args(tmp_path: Path) -> None:
    assert make_args(tmp_path, identifiers=["postfix/smtpd", "dovecot"]) == [
        "journalctl", "-f", "-o", "json", "--no-pager", "-n", "0",
        "-t", "postfix/smtpd", "-t", "dovecot"]
    assert make_args(tmp_path, units=["dovecot"], cursor="s=1;i=2") == [
        "journalctl", "-f", "-o", "json", "--no-pager", "--after-cursor=s=1;i=2",
        "-u", "dovecot"]
    assert make_args(tmp_path, identifiers=["postfix/smtpd"], units=["dovecot"],
                     from_start=True) == [
        "journalctl", "-f", "-o", "json", "--no-pager", "--no-tail",
        "SYSLOG_IDENTIFIER=postfix/smtpd", "+", "_SYSTEMD_UNIT=dovecot.service"]


@pytest.mark.needs("journalctl")
@pytest.mark.parametrize("kw", [
    {"identifiers": ["postfix/smtpd", "dovecot"]},
    {"units": ["dovecot", "postfix@-.service"]},
    {"identifiers": ["postfix/smtpd"], "units": ["dovecot"], "from_start": True},
    {"identifiers": ["postfix/smtpd"], "cursor": f"s={SEQNUM_ID};i=1;b={BOOT};m=1;t=1;x=1"},
])
def test_real_journalctl_accepts_args(tmp_path: Path, kw: dict) -> None:
    real = shutil.which("journalctl", path="/usr/bin:/bin") or "/usr/bin/journalctl"
    args = [a for a in make_args(tmp_path, **kw)[1:] if a != "-f"]
    # Not following, and an empty journal directory: only the option parsing is exercised.
    r = subprocess.run([real, "-D", str(tmp_path), *args, "-n", "0"], capture_output=True,
                       text=True, timeout=30)
    bad = ("unrecognized option", "invalid option", "requires an argument", "Failed to add")
    assert not any(b in r.stderr for b in bad), r.stderr
    assert r.returncode == 0 or "cursor" in r.stderr, (r.returncode, r.stderr)
    # And a wrong option is indeed reported by the same check.
    r = subprocess.run([real, "-D", str(tmp_path), "--no-such-option"], capture_output=True,
                       text=True, timeout=30)
    assert "unrecognized option" in r.stderr


# -- with the fake journalctl --------------------------------------------------------

class Env:
    def __init__(self, tmp: Path) -> None:
        self.journal = tmp / "journal.json"
        self.argv = tmp / "argv.json"
        self.flag = tmp / "died"
        self.journal.touch()
        self.n = 0

    def add(self, count: int, **kw: object) -> None:
        with open(self.journal, "a") as f:
            for _ in range(count):
                f.write(json.dumps(record(self.n, **kw)) + "\n")
                self.n += 1

    def argvs(self) -> list[list[str]]:
        if not self.argv.exists():
            return []
        return [json.loads(x) for x in self.argv.read_text().splitlines()]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("PATH", FAKEBIN + os.pathsep + os.environ.get("PATH", ""))
    e = Env(tmp_path)
    monkeypatch.setenv("FAKE_JOURNAL", str(e.journal))
    monkeypatch.setenv("FAKE_JOURNAL_ARGV", str(e.argv))
    monkeypatch.setenv("FAKE_JOURNAL_DIE_FLAG", str(e.flag))
    monkeypatch.setenv("TZ", "UTC")
    return e


@pytest.fixture
def sources() -> Iterator[list[JournalSource]]:
    made: list[JournalSource] = []
    yield made
    for s in made:
        s.close()


def seqs(chunks: list[bytes]) -> list[int]:
    return [int(x.rsplit(b"seq=", 1)[1]) for x in b"".join(chunks).split(b"\n")[:-1]]


def test_follow_save_cursor_and_resume(env: Env, tmp_path: Path, sources) -> None:
    env.add(5)                                   # old records: not shown on a first start
    store = Store(tmp_path / "state.db")
    try:
        got: list[bytes] = []
        src = JournalSource(["postfix/smtpd"], [], on_chunk=lambda n, c: got.append(c),
                            store=store)
        sources.append(src)
        pump(src, lambda: len(env.argvs()) == 1)
        assert env.argvs()[0] == ["-f", "-o", "json", "--no-pager", "-n", "0",
                                  "-t", "postfix/smtpd"]
        time.sleep(0.1)
        env.add(3)
        env.add(2, ident="dovecot")              # filtered out by -t
        pump(src, lambda: len(seqs(got)) == 3)
        assert seqs(got) == [5, 6, 7]
        assert all(c.endswith(b"\n") for c in got)
        src.close()
        sources.remove(src)
        cursor = store.get_cursor("journal")
        assert cursor == record(7)["__CURSOR"]

        env.add(4)                               # written while we are down
        got2: list[bytes] = []
        src = JournalSource(["postfix/smtpd"], [], on_chunk=lambda n, c: got2.append(c),
                            store=store)
        sources.append(src)
        pump(src, lambda: len(seqs(got2)) == 4)
        assert env.argvs()[1] == ["-f", "-o", "json", "--no-pager",
                                  f"--after-cursor={cursor}", "-t", "postfix/smtpd"]
        assert seqs(got2) == [10, 11, 12, 13]
    finally:
        for s in sources:
            s.close()
        sources.clear()
        store.close()


def test_restart_after_death_exactly_once(env: Env, monkeypatch, sources) -> None:
    monkeypatch.setenv("FAKE_JOURNAL_DIE_AFTER", "3")
    got: list[bytes] = []
    src = JournalSource([], ["postfix@-.service"], on_chunk=lambda n, c: got.append(c),
                        from_start=True)
    sources.append(src)
    raw = list(b"invalid \xc3\x28 utf8 seq=")      # byte-array MESSAGE in the stream too
    env.add(5)
    with open(env.journal, "a") as f:
        f.write(json.dumps(record(env.n, message=raw + list(str(env.n).encode()))) + "\n")
    env.n += 1
    env.add(4)
    # It dies after 3 records and half of the 4th; restarted after the 1 s backoff.
    pump(src, lambda: len(seqs(got)) >= 10, timeout=15)
    assert seqs(got) == list(range(10))
    assert env.flag.exists()
    argvs = env.argvs()
    assert len(argvs) == 2
    assert argvs[0][3:] == ["--no-pager", "--no-tail", "-u", "postfix@-.service"]
    assert argvs[1][4] == f"--after-cursor={record(2)['__CURSOR']}"
    assert src.stats()["journal"]["restarts"] == 1
    assert b"invalid \xc3\x28 utf8 seq=5\n" in b"".join(got)


def started(env: Env, timeout: float = 5.0) -> int:
    """How many fake journalctls have recorded their argv (they do so once running)."""
    deadline = time.monotonic() + timeout
    while not env.argvs() and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(env.argvs())


def test_missing_journalctl_is_retried_not_fatal(env: Env, tmp_path: Path, sources) -> None:
    now = [100.0]
    attempts: list[str] = []
    log = logging.getLogger("test.journal.missing")
    log.error = lambda msg, *args: attempts.append(msg % args)   # type: ignore[method-assign]
    path = tmp_path / "bin" / "journalctl"      # absent at first, installed later
    src = JournalSource(["x"], [], on_chunk=lambda n, c: None, journalctl=str(path),
                        log=log, clock=lambda: now[0])
    sources.append(src)
    assert src.proc is None and len(attempts) == 1
    src.process()                                # within the backoff: no busy retry
    assert len(attempts) == 1 and env.argvs() == []
    now[0] += 1.5                                # past the 1 s backoff: tried again
    src.process()
    assert len(attempts) == 2 and src.proc is None
    path.parent.mkdir()
    path.symlink_to(Path(FAKEBIN) / "journalctl")
    src.process()                                # backoff doubled to 2 s: not yet
    assert env.argvs() == []
    now[0] += 2.5
    src.process()
    assert src.proc is not None and started(env) == 1


def test_closed_source_starts_no_journalctl(env: Env, sources) -> None:
    now = [100.0]
    src = JournalSource(["x"], [], on_chunk=lambda n, c: None, clock=lambda: now[0])
    sources.append(src)
    assert started(env) == 1
    src.close()
    now[0] += 100.0
    src.process()                                # a stale ready fd after a reload
    assert src.proc is None
    time.sleep(0.3)                              # a journalctl started would record itself
    assert len(env.argvs()) == 1
