"""Sendmail watchdog: end SMTP sessions stuck in "cmd read" longer than a limit.

Sendmail titles each SMTP child via setproctitle(3) emulation, e.g.
``sendmail: MTA: server host.example [192.0.2.7] cmd read`` (sendmail 8 writes
``"sendmail: "``, then the expanded ProcTitlePrefix and ``": "`` if one is set, then
``"server " + $_ + " cmd read"`` where ``$_`` is ``[user@]host [ip][ (may be forged)]``
or ``[ip]`` without reverse DNS, and IPv6 addresses read ``IPv6:2001:db8::1``).

The daemon runs one non-blocking loop, so ending a process is split in two steps:

* ``kill(found)`` re-checks each process and sends SIGTERM, remembering it as pending;
* ``poll_pending()`` (call it from a timer; ``next_deadline()`` says when) sends SIGKILL
  to pending processes still alive ``grace`` seconds after their SIGTERM.

``run_once()`` does scan + kill + poll_pending without ever sleeping.  Signals go
through a pidfd opened *before* the identity check (same create_time and title), so a
PID reused by another process can never receive them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil

from logwatch.clock import Clock, wall
from logwatch.daemon.config import WatchdogConfig
from logwatch.effectors.sendmailtitle import (
    _NEVER,
    MAX_TITLE,
    client_ip,
    compile_patterns,
    read_cmdline,
    title_from_cmdline,
)
from logwatch.parsing.events import STUCK_SESSION, Event

PROGRAM = "logwatchd/watchdog"
RULE = "watchdog-cmd-read"

# Outcomes carried by KillReport.outcome.
TERM_SENT = "term-sent"     # SIGTERM delivered; SIGKILL follows after the grace if needed
EXITED = "exited"           # pending process ended after SIGTERM
KILLED = "killed"           # SIGKILL delivered after the grace
GONE = "gone"               # process vanished before we could signal it
CHANGED = "changed"         # PID now names another process (create_time/title/user differ)
DENIED = "denied"           # the kernel refused the signal (EPERM)
DRY_RUN = "dry-run"         # dry-run: logged, nothing sent

@dataclass(frozen=True, slots=True)
class StuckProcess:
    """A process whose title says it has waited in "cmd read" longer than the limit."""

    pid: int
    create_time: float
    title: str
    age: float
    username: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class KillReport:
    """What the watchdog did (or would do) to one stuck process."""

    pid: int
    title: str
    age: float
    ip: str | None
    signal: str | None      # "TERM", "KILL" or None when nothing was sent
    outcome: str            # one of TERM_SENT, EXITED, KILLED, GONE, CHANGED, DENIED, DRY_RUN
    username: str = ""


@dataclass(slots=True)
class _Pending:
    proc: StuckProcess
    deadline: float         # clock() value after which SIGKILL is due
    pidfd: int | None


@dataclass
class _Stats:
    scans: int = 0
    processes_seen: int = 0     # processes read by the last scan
    matched: int = 0            # titles matching a pattern (last scan)
    stuck: int = 0              # matched, old enough and owned by a listed user (last scan)
    kills: int = 0              # SIGTERMs sent
    sigkills: int = 0           # SIGKILLs sent after the grace
    exited: int = 0             # pending processes that ended after SIGTERM
    aborted: int = 0            # identity changed before a signal: nothing sent
    gone: int = 0
    denied: int = 0
    would_kill: int = 0         # dry-run
    errors: int = 0
    last_scan_seconds: float = 0.0


def _quote(text: str) -> str:
    # Titles carry remote-chosen text (ident user, PTR name): quote so a log line stays one line.
    return json.dumps(text, ensure_ascii=True)


class Watchdog:
    """Finds sendmail children stuck in "cmd read" and ends them (TERM, then KILL)."""

    def __init__(
        self,
        cfg: WatchdogConfig,
        *,
        dry_run: bool = False,
        log: logging.Logger | None = None,
        clock: Clock = wall,
    ) -> None:
        if cfg.limit < 0:
            raise ValueError(f"watchdog.limit must be >= 0, got {cfg.limit}")
        if cfg.interval <= 0:
            raise ValueError(f"watchdog.interval must be > 0, got {cfg.interval}")
        if cfg.grace < 0:
            raise ValueError(f"watchdog.grace must be >= 0, got {cfg.grace}")
        self.cfg = cfg
        self.dry_run = dry_run
        self.log = log or logging.getLogger("logwatchd.watchdog")
        self.clock = clock
        self.patterns = compile_patterns(cfg)
        self.users = frozenset(cfg.users)
        self._pending: dict[int, _Pending] = {}
        # Dry-run reports each would-be victim once, not on every scan.
        self._dry_seen: set[tuple[int, float]] = set()
        self._stats = _Stats()
        self._own_pid = os.getpid()

    # -- configuration -------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False when watchdog.enabled is off or the limit is 0."""
        return bool(self.cfg.enabled) and self.cfg.limit > 0

    def interval(self) -> float | None:
        """Seconds between scans: cfg.interval, at most limit / 2; None when disabled."""
        if not self.enabled:
            return None
        return min(float(self.cfg.interval), self.cfg.limit / 2.0)

    # -- matching ------------------------------------------------------------------

    def match_title(self, title: str) -> re.Match[str] | None:
        """The first pattern match for a whole title, or None (also for parent/queue titles)."""
        if not title or len(title) >= MAX_TITLE or _NEVER.match(title):
            return None
        for pat in self.patterns:
            m = pat.fullmatch(title)
            if m is not None:
                return m
        return None

    def scan(self) -> list[StuckProcess]:
        """Processes matching a pattern, older than the limit and owned by a listed user."""
        if not self.enabled:
            return []
        started = time.perf_counter()
        now = self.clock()
        limit = self.cfg.limit
        found: list[StuckProcess] = []
        seen = matched = 0
        for pid in psutil.pids():
            if pid == self._own_pid:
                continue
            raw = read_cmdline(pid)
            if not raw:     # gone, or a kernel thread
                continue
            seen += 1
            title = title_from_cmdline(raw)
            m = self.match_title(title)
            if m is None:
                continue
            matched += 1
            try:
                proc = psutil.Process(pid)
                ctime = proc.create_time()
                age = now - ctime
                if age <= limit:
                    continue
                username = proc.username()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.Error as exc:
                self._stats.errors += 1
                self.log.warning("action=scan-error pid=%d error=%s", pid, _quote(str(exc)))
                continue
            if username not in self.users:
                continue
            found.append(StuckProcess(pid, ctime, title, age, username, client_ip(m)))
        st = self._stats
        st.scans += 1
        st.processes_seen = seen
        st.matched = matched
        st.stuck = len(found)
        st.last_scan_seconds = time.perf_counter() - started
        if self._dry_seen:
            alive = {(p.pid, p.create_time) for p in found}
            self._dry_seen &= alive
        return found

    # -- identity ------------------------------------------------------------------

    def _identity(self, sp: StuckProcess) -> tuple[str, psutil.Process | None]:
        """("ok", process) if sp.pid still names the scanned process, else (GONE|CHANGED, None)."""
        try:
            proc = psutil.Process(sp.pid)
            if abs(proc.create_time() - sp.create_time) > 0.005:
                return CHANGED, None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return GONE, None
            raw = read_cmdline(sp.pid)
            if raw is None:
                return GONE, None
            if title_from_cmdline(raw) != sp.title:
                return CHANGED, None
            if proc.username() not in self.users:
                return CHANGED, None
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return GONE, None
        except psutil.Error:
            return CHANGED, None
        return "ok", proc

    @staticmethod
    def _open_pidfd(pid: int) -> int | None:
        # A pidfd pins one process: signals through it can't reach a later owner of the PID.
        try:
            return os.pidfd_open(pid)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ESRCH:
                raise ProcessLookupError(pid) from exc
            return None

    @staticmethod
    def _signal(pidfd: int | None, proc: psutil.Process | None, sig: int) -> str | None:
        """Send sig through the pidfd (else the verified psutil handle); None, GONE or DENIED."""
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            elif proc is not None:
                # No pidfd (old kernel): psutil re-checks create_time right before kill().
                proc.send_signal(sig)
            else:
                return GONE
        except (ProcessLookupError, psutil.NoSuchProcess):
            return GONE
        except (PermissionError, psutil.AccessDenied):
            return DENIED
        return None

    # -- acting --------------------------------------------------------------------

    def _log_action(self, sp: StuckProcess, sig: str | None, outcome: str) -> None:
        self.log.info(
            "action=kill pid=%d title=%s age=%d ip=%s user=%s signal=%s outcome=%s%s",
            sp.pid, _quote(sp.title), int(sp.age), sp.ip or "-", sp.username,
            sig or "-", outcome, " dry_run=1" if outcome == DRY_RUN else "",
        )

    def kill(self, found: Sequence[StuckProcess]) -> list[KillReport]:
        """SIGTERM each process after re-checking its identity; SIGKILL comes from poll_pending()."""
        reports: list[KillReport] = []
        now = self.clock()
        st = self._stats
        for sp in found:
            if sp.pid in self._pending:
                continue    # already TERMed; poll_pending() finishes it
            if self.dry_run:
                key = (sp.pid, sp.create_time)
                if key in self._dry_seen:
                    self.log.debug("action=kill pid=%d dry_run=1 repeat=1", sp.pid)
                    continue
                self._dry_seen.add(key)
                st.would_kill += 1
                self._log_action(sp, None, DRY_RUN)
                reports.append(self._report(sp, None, DRY_RUN))
                continue
            try:
                pidfd = self._open_pidfd(sp.pid)
            except ProcessLookupError:
                st.gone += 1
                reports.append(self._report(sp, None, GONE))
                continue
            keep = False
            try:
                ident, proc = self._identity(sp)
                if ident != "ok":
                    if ident == CHANGED:
                        st.aborted += 1
                        self.log.warning(
                            "action=kill-aborted pid=%d title=%s reason=identity-changed",
                            sp.pid, _quote(sp.title))
                    else:
                        st.gone += 1
                    reports.append(self._report(sp, None, ident))
                    continue
                failure = self._signal(pidfd, proc, signal.SIGTERM)
                if failure is not None:
                    if failure == DENIED:
                        st.denied += 1
                        self.log.warning("action=kill pid=%d signal=TERM outcome=denied", sp.pid)
                    else:
                        st.gone += 1
                    reports.append(self._report(sp, None, failure))
                    continue
                st.kills += 1
                self._log_action(sp, "TERM", TERM_SENT)
                reports.append(self._report(sp, "TERM", TERM_SENT))
                self._pending[sp.pid] = _Pending(sp, now + self.cfg.grace, pidfd)
                keep = True
            finally:
                if not keep and pidfd is not None:
                    os.close(pidfd)
        return reports

    def next_deadline(self) -> float | None:
        """Clock time at which poll_pending() has a SIGKILL due, or None if nothing is pending."""
        if not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def next_delay(self) -> float | None:
        """Seconds until poll_pending() has work (0 if overdue), or None: for the daemon's timer."""
        deadline = self.next_deadline()
        return None if deadline is None else max(0.0, deadline - self.clock())

    def pending(self) -> list[int]:
        """PIDs that got SIGTERM and are awaiting the grace."""
        return sorted(self._pending)

    def poll_pending(self) -> list[KillReport]:
        """Never blocks: reports processes that exited after SIGTERM; SIGKILLs those past the grace."""
        reports: list[KillReport] = []
        now = self.clock()
        st = self._stats
        for pid, pend in list(self._pending.items()):
            sp = pend.proc
            if pend.pidfd is not None and self._signal(pend.pidfd, None, 0) == GONE:
                ident, proc = GONE, None
            else:
                ident, proc = self._identity(sp)
            if ident == GONE:
                st.exited += 1
                self.log.info("action=kill pid=%d outcome=exited", pid)
                reports.append(self._report(sp, None, EXITED))
            elif now < pend.deadline:
                continue
            elif ident == CHANGED:
                st.aborted += 1
                self.log.warning(
                    "action=kill-aborted pid=%d title=%s signal=KILL reason=identity-changed",
                    pid, _quote(sp.title))
                reports.append(self._report(sp, None, CHANGED))
            else:
                failure = self._signal(pend.pidfd, proc, signal.SIGKILL)
                if failure is None:
                    st.sigkills += 1
                    self._log_action(sp, "KILL", KILLED)
                    reports.append(self._report(sp, "KILL", KILLED))
                elif failure == GONE:
                    st.exited += 1
                    reports.append(self._report(sp, None, EXITED))
                else:
                    st.denied += 1
                    self.log.warning("action=kill pid=%d signal=KILL outcome=denied", pid)
                    reports.append(self._report(sp, None, DENIED))
            self._drop(pid)
        return reports

    def run_once(self) -> list[KillReport]:
        """scan(), kill() and poll_pending() in one non-blocking call."""
        return self.kill(self.scan()) + self.poll_pending()

    def close(self) -> None:
        """Forget pending processes (no SIGKILL follows) and close their pidfds."""
        for pid in list(self._pending):
            self._drop(pid)

    def _drop(self, pid: int) -> None:
        pend = self._pending.pop(pid, None)
        if pend is not None and pend.pidfd is not None:
            os.close(pend.pidfd)

    @staticmethod
    def _report(sp: StuckProcess, sig: str | None, outcome: str) -> KillReport:
        return KillReport(sp.pid, sp.title, sp.age, sp.ip, sig, outcome, sp.username)

    # -- reporting -----------------------------------------------------------------

    def stats(self) -> dict[str, int | float]:
        """Counters for the daemon's status."""
        st = self._stats
        return {
            "enabled": int(self.enabled),
            "dry_run": int(self.dry_run),
            "scans": st.scans,
            "processes_seen": st.processes_seen,
            "matched": st.matched,
            "stuck": st.stuck,
            "kills": st.kills,
            "sigkills": st.sigkills,
            "exited": st.exited,
            "aborted": st.aborted,
            "gone": st.gone,
            "denied": st.denied,
            "would_kill": st.would_kill,
            "errors": st.errors,
            "pending": len(self._pending),
            "last_scan_seconds": round(st.last_scan_seconds, 6),
        }

    def to_event(self, report: KillReport) -> Event | None:
        """A stuck-session failure Event for a first-hand kill report with a client IP, else None."""
        if not self.cfg.count_as_offence or report.ip is None:
            return None
        if report.outcome not in (TERM_SENT, DRY_RUN):
            return None     # follow-ups (KILL, exited) and aborted kills are not new offences
        return Event(
            time=datetime.fromtimestamp(self.clock(), UTC),
            kind=STUCK_SESSION,
            ip=report.ip,
            user=None,
            service="smtp",
            program=PROGRAM,
            rule=RULE,
            host=None,
        )
