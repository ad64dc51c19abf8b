"""Read the systemd journal through ``journalctl -f -o json`` and turn records into syslog lines.

The records become classic ``MMM dd HH:MM:SS HOST IDENT[PID]: MESSAGE`` lines, so the same
parser and rules serve files and the journal. The cursor of the last delivered record is kept
in the store (name "journal") and journalctl resumes after it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from logwatch.clock import Clock, local, wall
from logwatch.sources import DEFAULT_MAX_LINE, LineBuffer, OnChunk

LOG = logging.getLogger("logwatchd.sources.journal")

CURSOR_NAME = "journal"
READ_SIZE = 1 << 20
READ_MAX = 4 << 20            # per process() call; the pipe stays readable if more is waiting
BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
STABLE_RUN = 30.0             # a journalctl that ran this long resets the backoff
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _field(value: Any) -> bytes | None:
    """A journal JSON field as bytes: a string, a list of byte values (not valid UTF-8), or a
    list of those when the field occurs several times in the record (the first one wins)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return bytes(v & 0xFF for v in value)
        for v in value:
            if not isinstance(v, int):
                got = _field(v)
                if got is not None:
                    return got
        return b"" if not value else None
    if isinstance(value, int | float):
        return str(value).encode()
    return None


def _one_line(b: bytes) -> bytes:
    """Embedded line breaks would split one record into several lines: make them spaces."""
    b = b.rstrip(b"\r\n")
    if b"\n" in b or b"\r" in b:
        b = b.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")
    return b


def _token(b: bytes | None, default: bytes) -> bytes:
    """Host and identifier are single words in a syslog line."""
    if not b:
        return default
    return b"_".join(_one_line(b).split()) or default


def record_to_line(rec: dict[str, Any], clock: Clock = wall) -> bytes | None:
    """One journal record as a syslog line ending in a newline (dated clock() without a
    timestamp); None without a MESSAGE."""
    msg = _field(rec.get("MESSAGE"))
    if msg is None:
        return None
    try:
        ts = int(_field(rec.get("__REALTIME_TIMESTAMP")) or b"0") / 1e6
    except ValueError:
        ts = 0.0
    tm = local(ts or clock())
    # English month names whatever the locale: that is what syslog writes and rules expect.
    stamp = f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
    host = _token(_field(rec.get("_HOSTNAME")), b"localhost")
    ident = _token(_field(rec.get("SYSLOG_IDENTIFIER")) or _field(rec.get("_COMM")), b"unknown")
    pid = _field(rec.get("SYSLOG_PID")) or _field(rec.get("_PID"))
    head = stamp.encode() + b" " + host + b" " + ident
    if pid and pid.isdigit():
        head += b"[" + pid + b"]"
    return head + b": " + _one_line(msg) + b"\n"


class JournalSource:
    """Runs journalctl in follow mode, converts its JSON records and restarts it if it dies."""

    name = "journal"

    def __init__(
        self,
        identifiers: list[str],
        units: list[str],
        *,
        on_chunk: OnChunk,
        store: Any = None,
        journalctl: str = "journalctl",
        from_start: bool = False,
        max_line: int = DEFAULT_MAX_LINE,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Clock = wall,
    ) -> None:
        self.identifiers = list(identifiers)
        self.units = list(units)
        self.on_chunk = on_chunk
        self.store = store
        self.journalctl = journalctl
        self.from_start = from_start
        self.log = log or LOG
        self.clock = clock                  # restarts and backoff
        self.wall_clock = wall_clock        # dates records without a timestamp
        # The read end keeps one fd number across restarts (dup2), so a reused fd number can
        # never confuse the daemon's selector; only journalctl holds the write end, so its
        # death shows as EOF. While none runs, fileno() is None and the daemon polls us.
        self._r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self._eof = True
        # JSON records carry the message and metadata, so allow some room beyond max_line.
        self._lb = LineBuffer(max_line * 4 + 16384)
        self.max_line = max_line
        self.cursor: str | None = store.get_cursor(CURSOR_NAME) if store is not None else None
        self._saved_cursor = self.cursor
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._next_start = 0.0
        self._backoff = BACKOFF_MIN
        self.restarts = 0
        self._counts = {"records": 0, "lines": 0, "bytes": 0, "bad_records": 0,
                        "skipped_long": 0, "restarts": 0}
        self.closed = False
        self.budget = READ_MAX        # bytes per process() call; the daemon may lower it (policy)
        self._start()

    # -- public interface -----------------------------------------------------

    def args(self) -> list[str]:
        """The journalctl command line (an argument list, never a shell string)."""
        argv = [self.journalctl, "-f", "-o", "json", "--no-pager"]
        if self.cursor:
            argv.append(f"--after-cursor={self.cursor}")
        elif self.from_start:
            argv.append("--no-tail")      # follow mode shows 10 old lines unless told
        else:
            # -n 0 rather than --since=now: no dependence on clock resolution or skew.
            argv += ["-n", "0"]
        if self.identifiers and self.units:
            # -t and -u given together are ANDed by journalctl; we want either, so use
            # match expressions, where "+" means OR.
            matches = [f"SYSLOG_IDENTIFIER={i}" for i in self.identifiers]
            matches.append("+")
            matches += [f"_SYSTEMD_UNIT={_unit_name(u)}" for u in self.units]
            argv += matches
        else:
            for ident in self.identifiers:
                argv += ["-t", ident]
            for unit in self.units:
                argv += ["-u", unit]
        return argv

    def fileno(self) -> int | None:
        return None if self.proc is None else self._r

    def process(self) -> None:
        """Convert and deliver what journalctl wrote; restart it (with backoff) if it died."""
        if self.closed:       # a closed source must not start a new journalctl
            return
        if self.proc is not None:
            self._drain(self.budget)
            if self._eof:
                self._reap()
        if self.proc is None and self.clock() >= self._next_start:
            self._start()

    def _reap(self) -> None:
        """journalctl closed its output: collect it and schedule the restart."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        # A half-written record is dropped: the next journalctl resumes after the cursor of
        # the last record delivered, so it comes again whole.
        self._lb.reset()
        ran = self.clock() - self._started_at
        if ran >= STABLE_RUN:
            self._backoff = BACKOFF_MIN
        self.log.warning("action=journalctl-exited rc=%s ran=%.1fs restart_in=%.0fs",
                         rc, ran, self._backoff)
        self.proc = None
        self._next_start = self.clock() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def save_positions(self) -> None:
        """Persist the cursor of the last delivered record (every second and at stop)."""
        if self.store is not None and self.cursor and self.cursor != self._saved_cursor:
            self.store.set_cursor(CURSOR_NAME, self.cursor)
            self._saved_cursor = self.cursor

    def stats(self) -> dict[str, dict[str, int]]:
        return {self.name: dict(self._counts,
                                skipped_long=self._counts["skipped_long"] + self._lb.skipped_long,
                                restarts=self.restarts)}

    def close(self) -> None:
        """Stop journalctl, deliver what it had written, save the cursor, close the pipe."""
        if self.closed:
            return
        self.closed = True
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._drain(None)
            self.proc = None
        self.save_positions()
        try:
            os.close(self._r)
        except OSError:
            pass

    # -- internals ------------------------------------------------------------

    def _start(self) -> None:
        argv = self.args()
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w,
                                         close_fds=True)
        except OSError as exc:
            os.close(r)
            self.log.error("action=journalctl-start-failed cmd=%s error=%s restart_in=%.0fs",
                           argv[0], exc, self._backoff)
            self.proc = None
            self._next_start = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            return
        finally:
            os.close(w)
        os.dup2(r, self._r, inheritable=False)
        os.close(r)
        os.set_blocking(self._r, False)
        self._eof = False
        if self._started_at:
            self.restarts += 1
        self._started_at = self.clock()
        self.log.info("action=journalctl-start pid=%d cursor=%s", self.proc.pid,
                      "yes" if self.cursor else "no")

    def _drain(self, limit: int | None) -> None:
        parts: list[bytes] = []
        total = 0
        while limit is None or total < limit:
            try:
                data = os.read(self._r, READ_SIZE if limit is None
                               else max(1, min(READ_SIZE, limit - total)))
            except BlockingIOError:
                break
            if not data:
                self._eof = True
                break
            total += len(data)
            out = self._lb.feed(data)
            if out:
                parts.extend(self._convert(out))
        if parts:
            chunk = b"".join(parts)
            self._counts["bytes"] += len(chunk)
            # self.cursor already covers this chunk, so a consumer may commit both together.
            self.on_chunk(self.name, chunk)

    def _convert(self, block: bytes) -> list[bytes]:
        out: list[bytes] = []
        for raw in block.split(b"\n")[:-1]:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self._counts["bad_records"] += 1
                if self._counts["bad_records"] <= 10:
                    self.log.warning("action=bad-journal-record error=%s head=%r", exc, raw[:80])
                continue
            self._counts["records"] += 1
            cursor = rec.get("__CURSOR")
            if isinstance(cursor, str):
                self.cursor = cursor
            line = record_to_line(rec, self.wall_clock)
            if line is None:
                continue
            if len(line) - 1 > self.max_line:
                self._counts["skipped_long"] += 1
                continue
            self._counts["lines"] += 1
            out.append(line)
        return out


def _unit_name(unit: str) -> str:
    """journalctl -u adds ".service" to a bare name; do the same for a match expression."""
    return unit if "." in unit else unit + ".service"
