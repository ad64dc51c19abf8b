"""Sendmail watchdog against real processes titled like sendmail's SMTP children."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime

import psutil
import pytest
from conftest import FakeClock

from logwatch.daemon.config import WatchdogConfig
from logwatch.effectors.watchdog import (
    CHANGED,
    DRY_RUN,
    EXITED,
    GONE,
    KILLED,
    TERM_SENT,
    KillReport,
    StuckProcess,
    Watchdog,
    title_from_cmdline,
)
from logwatch.parsing.events import STUCK_SESSION

STUCK_V4 = "sendmail: server host.example [192.0.2.7] cmd read"
STUCK_SMMTA = "sm-mta: server [192.0.2.8] cmd read"
STUCK_V6 = "sendmail: MTA: server mx.example [IPv6:2001:db8::1] cmd read"
PARENT = "sendmail: MTA: accepting connections"
VIM = "vim cmd read notes"

Spawn = Callable[..., subprocess.Popen]


def future_clock(offset: float = 1000.0) -> Callable[[], float]:
    """A clock `offset` seconds ahead, so every process looks older than a short limit."""
    return lambda: time.time() + offset


def wait_title(pid: int, title: str, timeout: float = 5.0) -> None:
    """Wait until exec has filled in /proc/PID/cmdline (it is briefly empty after vfork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if title_from_cmdline(fh.read()) == title:
                return
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} never showed title {title!r}")


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start real processes with a chosen argv[0] title; every one is killed at the end."""
    procs: list[subprocess.Popen] = []

    def _spawn(title: str, *, ignore_term: bool = False, user: str | None = None
               ) -> subprocess.Popen:
        if ignore_term:
            code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                    " print('ready', flush=True); time.sleep(600)")
            proc = subprocess.Popen([title, "-c", code], executable=sys.executable,
                                    stdout=subprocess.PIPE, user=user)
            procs.append(proc)
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
        else:
            proc = subprocess.Popen([title, "600"], executable="/bin/sleep", user=user)
            procs.append(proc)
        wait_title(proc.pid, title)
        return proc

    try:
        yield _spawn
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def make(limit: float = 30.0, grace: float = 0.3, dry_run: bool = False,
         clock: Callable[[], float] | None = None, **kw: object) -> Watchdog:
    cfg = WatchdogConfig(limit=limit, grace=grace, **kw)  # type: ignore[arg-type]
    return Watchdog(cfg, dry_run=dry_run, clock=clock or future_clock())


def mine(found: list[StuckProcess], *procs: subprocess.Popen) -> list[StuckProcess]:
    """Only our own test processes: a test must never signal anything else on the box."""
    pids = {p.pid for p in procs}
    return [f for f in found if f.pid in pids]


def drain(wd: Watchdog, timeout: float = 10.0) -> list[KillReport]:
    """Poll the non-blocking SIGKILL step until nothing is pending (tests only)."""
    reports: list[KillReport] = []
    deadline = time.monotonic() + timeout
    while wd.pending() and time.monotonic() < deadline:
        reports += wd.poll_pending()
        time.sleep(0.02)
    assert not wd.pending(), "pending processes never resolved"
    return reports


def reap(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    return proc.wait(timeout=timeout)


# -- titles (pure) ---------------------------------------------------------------------

@pytest.mark.parametrize(("title", "ip"), [
    (STUCK_V4, "192.0.2.7"),
    (STUCK_SMMTA, "192.0.2.8"),
    (STUCK_V6, "2001:db8::1"),
    ("sendmail: server [IPv6:2001:db8:0:0::5] cmd read", "2001:db8::5"),
    ("sendmail: server [IPv6:::ffff:192.0.2.9] cmd read", "192.0.2.9"),
    ("sendmail: server ident@host.example [192.0.2.10] cmd read", "192.0.2.10"),
    ("sendmail: server ident@[192.0.2.15] cmd read", "192.0.2.15"),     # ident, no PTR
    ("sendmail: server host.example [192.0.2.11] (may be forged) cmd read", "192.0.2.11"),
    ("sendmail: MTA: tA1BCd2E012345: server [192.0.2.12] cmd read", "192.0.2.12"),
    # The ident user is chosen by the remote party: the address sendmail appends wins.
    ("sendmail: server x [6.6.6.6] y@host.example [192.0.2.13] cmd read", "192.0.2.13"),
    ("sendmail: server [6.6.6.6] cmd read@evil [192.0.2.14] cmd read", "192.0.2.14"),
    # A session whose bracket holds no valid address is still a stuck session.
    ("sendmail: server host.example [999.1.1.1] cmd read", None),
])
def test_matching_titles(title: str, ip: str | None) -> None:
    wd = make()
    m = wd.match_title(title)
    assert m is not None
    from logwatch.effectors.watchdog import client_ip
    assert client_ip(m) == ip


@pytest.mark.parametrize("title", [
    VIM,
    PARENT,
    "sendmail: accepting connections",
    "sendmail: MTA: rejecting connections on daemon MTA-v4: load average: 12",
    "sendmail: MTA: ./tA1BCd2E012345 from queue",
    "sendmail: MTA: running queue: /var/spool/mqueue",
    "sendmail: Queue runner@00:30:00 for /var/spool/mqueue",
    "sendmail: MTA: startup with [192.0.2.7]",
    "sendmail: MTA: tA1BCd2E012345 host.example [192.0.2.7]: DATA",
    "sendmail: server [192.0.2.7] cmd read trailing",
    "xsendmail: server [192.0.2.7] cmd read",
    "bash -c sendmail: server [192.0.2.7] cmd read",
    "sendmail: server cmd read",
    "sendmail: server host.example cmd read",
    "",
])
def test_non_matching_titles(title: str) -> None:
    assert make().match_title(title) is None


def test_custom_pattern_cannot_touch_daemon_parent() -> None:
    wd = make(patterns=[r".*connections.*", r"myssh: server \[(?P<addr>[^\]]+)\] idle"])
    assert wd.match_title(PARENT) is None
    assert wd.match_title("sendmail: MTA: rejecting connections on daemon MTA: 3 children") is None
    m = wd.match_title("myssh: server [192.0.2.99] idle")
    assert m is not None and m.group("addr") == "192.0.2.99"


def test_title_from_cmdline_padding() -> None:
    assert title_from_cmdline(STUCK_V4.encode() + b"\0" * 200) == STUCK_V4
    assert title_from_cmdline(STUCK_V4.encode() + b" " * 200) == STUCK_V4
    assert title_from_cmdline(STUCK_V4.encode() + b"\x00600\x00") == STUCK_V4
    assert title_from_cmdline(b"") == ""


def test_backtracking_is_bounded() -> None:
    wd = make()
    hostile = "sendmail: server " + "[ " * 2000 + "x cmd read"
    started = time.perf_counter()
    assert wd.match_title(hostile[:4000]) is None
    assert time.perf_counter() - started < 2.0   # catastrophic backtracking would take ages


# -- configuration ---------------------------------------------------------------------

def test_interval_capped_at_half_the_limit() -> None:
    assert make(limit=3600, interval=60).interval() == 60
    assert make(limit=30, interval=60).interval() == 15
    assert make(limit=0).interval() is None
    assert make(limit=3600, enabled=False).interval() is None


def test_disabled_scans_nothing(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    assert mine(make(limit=0).scan(), proc) == []
    assert mine(make(enabled=False).scan(), proc) == []
    assert mine(make().scan(), proc) != []


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"watchdog.patterns\[1\]"):
        make(patterns=["ok", "(unclosed"])
    with pytest.raises(ValueError, match="limit"):
        make(limit=-1)
    with pytest.raises(ValueError, match="grace"):
        make(grace=-1)


# -- real processes --------------------------------------------------------------------

def test_scan_finds_stuck_sessions(spawn: Spawn) -> None:
    procs = [spawn(t) for t in (STUCK_V4, STUCK_SMMTA, STUCK_V6)]
    found = {f.pid: f for f in mine(make().scan(), *procs)}
    assert set(found) == {p.pid for p in procs}
    assert found[procs[0].pid].ip == "192.0.2.7"
    assert found[procs[1].pid].ip == "192.0.2.8"
    assert found[procs[2].pid].ip == "2001:db8::1"
    assert found[procs[0].pid].title == STUCK_V4
    assert found[procs[0].pid].username == "root"
    assert found[procs[0].pid].age > 30


def test_stuck_sessions_killed_with_term(spawn: Spawn, caplog: pytest.LogCaptureFixture) -> None:
    procs = [spawn(STUCK_V4), spawn(STUCK_SMMTA)]
    wd = make()
    with caplog.at_level(logging.INFO, logger="logwatchd.watchdog"):
        reports = wd.kill(mine(wd.scan(), *procs))
    assert [(r.signal, r.outcome) for r in reports] == [("TERM", TERM_SENT)] * 2
    for proc in procs:
        assert reap(proc) == -signal.SIGTERM
    line = next(r.getMessage() for r in caplog.records if f"pid={procs[0].pid} " in r.getMessage())
    assert line.startswith(f"action=kill pid={procs[0].pid} title=\"{STUCK_V4}\" age=")
    assert "ip=192.0.2.7" in line and "signal=TERM" in line
    follow = drain(wd)
    assert sorted(r.outcome for r in follow) == [EXITED, EXITED]
    stats = wd.stats()
    assert stats["kills"] == 2 and stats["exited"] == 2 and stats["sigkills"] == 0
    assert stats["scans"] == 1 and stats["pending"] == 0


def test_real_age_with_short_limit(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    wd = make(limit=1.0, clock=time.time)
    if time.time() - psutil.Process(proc.pid).create_time() < 0.8:   # not on a stalled box
        assert mine(wd.scan(), proc) == []      # younger than the limit
    time.sleep(1.3)
    found = mine(wd.scan(), proc)
    assert [f.pid for f in found] == [proc.pid] and found[0].age > 1.0
    assert [r.outcome for r in wd.kill(found)] == [TERM_SENT]
    assert reap(proc) == -signal.SIGTERM
    drain(wd)


def test_term_ignored_then_sigkill_after_grace(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4, ignore_term=True)
    clock = FakeClock(time.time() + 1000.0)   # every test process is past a short limit
    wd = make(grace=10.0, clock=clock)
    found = mine(wd.scan(), proc)
    assert [r.outcome for r in wd.kill(found)] == [TERM_SENT]
    assert wd.next_deadline() == clock.now + 10.0
    assert wd.next_delay() == 10.0
    clock.now += 9.0
    assert wd.poll_pending() == []          # still inside the grace: nothing yet
    time.sleep(0.1)
    assert proc.poll() is None and wd.pending() == [proc.pid]
    clock.now += 1.5
    reports = wd.poll_pending()
    assert [(r.signal, r.outcome) for r in reports] == [("KILL", KILLED)]
    assert reap(proc) == -signal.SIGKILL
    assert wd.stats()["sigkills"] == 1 and wd.stats()["kills"] == 1
    assert wd.next_deadline() is None and wd.next_delay() is None


def test_term_ignored_real_grace(spawn: Spawn) -> None:
    proc = spawn(STUCK_SMMTA, ignore_term=True)
    wd = make(grace=0.3)
    assert [r.outcome for r in wd.kill(mine(wd.scan(), proc))] == [TERM_SENT]
    assert [(r.signal, r.outcome) for r in drain(wd)] == [("KILL", KILLED)]
    assert reap(proc) == -signal.SIGKILL


def test_poll_pending_never_blocks(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4, ignore_term=True)
    wd = make(grace=30.0)
    wd.kill(mine(wd.scan(), proc))
    started = time.monotonic()
    assert wd.poll_pending() == []
    assert time.monotonic() - started < 5.0    # loose: it must not wait out the 30 s grace
    assert proc.poll() is None
    wd.close()                                  # forgets the victim; fixture kills it


def test_young_processes_survive(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    wd = make(limit=3600, clock=time.time)
    assert mine(wd.scan(), proc) == []
    assert proc.poll() is None


def test_parent_and_lookalikes_survive(spawn: Spawn) -> None:
    procs = [spawn(PARENT), spawn(VIM), spawn("sendmail: MTA: running queue: /var/spool/mqueue")]
    wd = make()
    assert mine(wd.scan(), *procs) == []
    for proc in procs:
        assert proc.poll() is None


@pytest.mark.needs("root")              # to start a process as nobody
def test_other_users_survive(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4, user="nobody")
    assert psutil.Process(proc.pid).username() == "nobody"
    assert mine(make().scan(), proc) == []
    # The user filter is what spared it: listing the user makes it a candidate.
    assert [f.pid for f in mine(make(users=["nobody"]).scan(), proc)] == [proc.pid]
    assert proc.poll() is None


def test_changed_create_time_aborts(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    wd = make()
    (found,) = mine(wd.scan(), proc)
    reports = wd.kill([replace(found, create_time=found.create_time - 5)])
    assert [(r.signal, r.outcome) for r in reports] == [(None, CHANGED)]
    assert wd.stats()["aborted"] == 1 and wd.stats()["kills"] == 0
    time.sleep(0.1)
    assert proc.poll() is None


def test_changed_title_aborts(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    wd = make()
    (found,) = mine(wd.scan(), proc)
    reports = wd.kill([replace(found, title=STUCK_SMMTA)])
    assert [r.outcome for r in reports] == [CHANGED]
    time.sleep(0.1)
    assert proc.poll() is None


def test_exited_process_is_gone(spawn: Spawn) -> None:
    proc = spawn(STUCK_V4)
    wd = make()
    found = mine(wd.scan(), proc)
    proc.kill()
    reap(proc)
    assert [(r.signal, r.outcome) for r in wd.kill(found)] == [(None, GONE)]


def _take_pid(pid: int, title: str, procs: list[subprocess.Popen]) -> subprocess.Popen | None:
    """Start a process on a given free PID via ns_last_pid (root); None if another won the race."""
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(pid - 1))
        proc = subprocess.Popen([title, "600"], executable="/bin/sleep")
        procs.append(proc)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/proc/sys/kernel/ns_last_pid"),
                    reason="needs root and /proc/sys/kernel/ns_last_pid")
def test_pid_reused_between_scan_and_kill(spawn: Spawn) -> None:
    victim = spawn(STUCK_V4)
    wd = make()
    found = mine(wd.scan(), victim)
    assert [f.pid for f in found] == [victim.pid]
    victim.kill()
    reap(victim)
    time.sleep(0.05)    # the newcomer gets a later create_time (10 ms ticks)
    others: list[subprocess.Popen] = []
    try:
        # Same PID, same title: only the create_time tells the newcomer apart.
        newcomer = _take_pid(victim.pid, STUCK_V4, others)
        if newcomer is None:
            pytest.skip("could not win the PID race on a busy machine")
        wait_title(newcomer.pid, STUCK_V4)
        reports = wd.kill(found)
        assert [(r.signal, r.outcome) for r in reports] == [(None, CHANGED)]
        time.sleep(0.1)
        assert newcomer.poll() is None
    finally:
        for proc in others:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_dry_run_kills_nothing(spawn: Spawn, caplog: pytest.LogCaptureFixture) -> None:
    proc = spawn(STUCK_V4, ignore_term=False)
    wd = make(dry_run=True)
    with caplog.at_level(logging.INFO, logger="logwatchd.watchdog"):
        reports = wd.kill(mine(wd.scan(), proc))
        again = wd.kill(mine(wd.scan(), proc))
    assert [(r.signal, r.outcome) for r in reports] == [(None, DRY_RUN)]
    assert again == []                       # reported once, not on every scan
    assert wd.pending() == [] and wd.poll_pending() == []
    time.sleep(0.1)
    assert proc.poll() is None
    assert any("dry_run=1" in r.getMessage() and f"pid={proc.pid} " in r.getMessage()
               for r in caplog.records)
    assert wd.stats()["would_kill"] == 1 and wd.stats()["kills"] == 0


def test_events_from_reports(spawn: Spawn) -> None:
    proc = spawn(STUCK_V6)
    wd = make()
    (report,) = wd.kill(mine(wd.scan(), proc))
    assert report.outcome == TERM_SENT
    ev = wd.to_event(report)
    assert ev is not None
    assert ev.kind == STUCK_SESSION and ev.ip == "2001:db8::1" and ev.service == "smtp"
    assert ev.program == "logwatchd/watchdog" and ev.rule == "watchdog-cmd-read"
    assert isinstance(ev.time, datetime) and ev.time.tzinfo is not None
    reap(proc)
    follow = drain(wd)
    assert [r.outcome for r in follow] == [EXITED]
    assert [wd.to_event(r) for r in follow] == [None]     # follow-ups are no new offence
    assert wd.to_event(replace(report, ip=None)) is None
    assert make(count_as_offence=False).to_event(report) is None


def test_run_once(spawn: Spawn) -> None:
    # run_once acts on every match on the box, so the test narrows the patterns to a
    # title only it uses (a unique ProcTitlePrefix) instead of filtering by PID.
    token = f"T{os.getpid()}x{time.monotonic_ns()}"
    title = f"sendmail: {token}: server [192.0.2.30] cmd read"
    proc = spawn(title, ignore_term=True)
    clock = FakeClock(time.time() + 1000.0)   # every test process is past a short limit
    wd = make(grace=5.0, clock=clock)
    wd.patterns = [re.compile(
        r"sendmail: " + token + r": server \[(?P<addr>[^\[\]\s]+)\] cmd read")]
    first = wd.run_once()
    assert [(r.pid, r.signal, r.outcome, r.ip) for r in first] == [
        (proc.pid, "TERM", TERM_SENT, "192.0.2.30")]
    clock.now += 6.0
    second = wd.run_once()      # the pending victim is not TERMed twice; the grace is over
    assert [(r.pid, r.signal, r.outcome) for r in second] == [(proc.pid, "KILL", KILLED)]
    assert reap(proc) == -signal.SIGKILL
    assert wd.stats()["scans"] == 2 and wd.stats()["kills"] == 1
