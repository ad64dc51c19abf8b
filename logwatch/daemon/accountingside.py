"""The daemon's end of the accounting process (accountingworker.py): starts it, hands its
committed records to the risk engine (one call per batch), keeps its last counters for
`logwatchctl status` and /metrics, answers `logwatchctl messages` from the store, tells it
about a reload, restarts it (with backoff) when it dies, and stops it by closing its input.

The worker reads the logs itself and commits its own positions, so a restart loses and
repeats nothing. With --stdin the daemon forwards each chunk, numbered, and keeps it until
the worker says it is committed: a new worker gets the rest again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from logwatch.clock import Clock, wall
from logwatch.daemon.accountingwire import (
    PIPE_SIZE,
    chunk_head,
    decode_records,
    decode_reject,
    frame,
    query,
    raise_gc_threshold,
    rules_digest,
    split_frames,
)
from logwatch.daemon.factory import node_name, store_url

log = logging.getLogger("logwatchd.accounting")

STDIN = "stdin"               # sources/stdin.py StdinSource.name: only its chunks are sent

START_TIMEOUT = 120.0         # the open messages of a big store are loaded first
STOP_TIMEOUT = 1.5            # at a stop (SIGTERM: 2 s in all); it commits a chunk at most
DRAIN_TIMEOUT = 600.0         # at --stdin's end of input: all it was sent is accounted
BACKOFF = (1.0, 60.0)         # first and longest wait before a restart
STABLE = 60.0                 # a worker that ran this long restarts at the first wait again
READ_MAX = 8 << 20            # bytes read per wakeup: the loop's other fds get their turn
# Counters of the worker that are not monotonic: not carried over a restart.
GAUGES = frozenset({"open", "pending", "unwritten", "written_seq", "stats_log", "process",
                    "final"})


def carry(base: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """base + last for the counters (nested), so a restart does not reset them."""
    out = dict(base)
    for key, value in last.items():
        if key in GAUGES:
            continue
        if isinstance(value, dict):
            out[key] = carry(base.get(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = base.get(key, 0) + value
    return out


class AccountingSide:
    """The worker process as the daemon sees it (Parts.accounting)."""

    def __init__(self, cfg: Any, loop: Any, store: Any, on_records: Callable[[list[Any]], None],
                 error: Callable[[str], None], clock: Clock = wall, debug: bool = False,
                 checked: Callable[[], Any] | None = None) -> None:
        self.cfg, self.loop, self.store, self.clock = cfg, loop, store, clock
        # The daemon's ruleset, self-checked: the worker skips the checks of the same rules.
        self.checked = checked
        self.digest_due = False       # the worker waits for the daemon's rules' digest
        self.on_records, self.error, self.debug = on_records, error, debug
        self.forwarding = cfg.sources.stdin       # only one process can read stdin
        # What the daemon opened at start (a reload does not change them).
        self.place = {"url": store_url(cfg), "node": node_name(cfg),
                      "state_dir": cfg.daemon.state_dir}
        self.session = f"{os.getpid()}-{clock():.6f}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.inbuf = bytearray()
        self.unacked: deque[tuple[int, bytes]] = deque()    # stdin chunks not committed yet
        self.chunks = 0
        self.last: dict[str, Any] = {}        # the worker's last counters
        self.base: dict[str, Any] = {}        # those of the workers before it
        self.restarts = self.deaths = self.errors = 0
        # The newest record handed to on_records: a new worker sends those after it again
        # (committed by one killed before it could send them).
        self.seq_seen: int | None = None
        self.directions = {"sent": 0, "received": 0}       # of the records handed on
        self.backoff = BACKOFF[0]
        self.started_at = 0.0
        self.ready, self.failure = False, cast("str | None", None)
        self.stopping = False
        loop.on_timer("accounting-restart", self._on_restart)
        raise_gc_threshold()          # as when the accounting ran in the daemon

    # -- the process -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; its answer (ready, or failed) comes on the loop, or through
        wait_ready() at the daemon's start (loading its open messages may take seconds)."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(    # noqa: S603 - our own module, an argument list
            [sys.executable, "-m", "logwatch.daemon.accountingworker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass                  # over /proc/sys/fs/pipe-max-size
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.inbuf = bytearray()
        self.ready, self.failure = False, None
        self.started_at = time.monotonic()
        self.loop.register(self.proc.stdout.fileno(), self.on_readable)
        # At the daemon's start its rules are loaded (and checked) after this: the digest
        # goes in wait_ready().
        digest = self._rules_digest()
        self.digest_due = digest is None and self.checked is not None
        try:
            self._write(frame({"cfg": self.cfg, **self.place, "session": self.session,
                               "stdin": self.forwarding, "parent": os.getpid(),
                               "debug": self.debug, "resend_after": self.seq_seen,
                               "rules_digest": digest, "rules_later": self.digest_due}))
            for number, chunk in list(self.unacked):        # what a dead worker left
                self._write(chunk_head(number, chunk))
                self._write(chunk)
        except OSError:               # it died at once: no restart loop without a wait
            self._reap(0.0)
            raise

    def _rules_digest(self) -> str | None:
        """rules_digest() of the daemon's checked ruleset (None: the worker checks its own)."""
        ruleset = self.checked() if self.checked is not None else None
        return rules_digest(ruleset) if ruleset is not None else None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """At the daemon's start: until the worker has loaded its state (OSError if not)."""
        deadline = time.monotonic() + timeout
        if self.digest_due and self.proc is not None:
            self.digest_due = False
            try:
                self._write(frame(("rules", self._rules_digest())))
            except OSError:
                pass                  # it is gone: its end of output follows
        while self.proc is not None and not self.ready:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fileno()], [], [], left)[0]:
                break
            alive = self._read()
            for msg in split_frames(self.inbuf):
                self._handle(msg)
            if not alive:
                break
        if not self.ready:
            self._reap(0.0)
            raise OSError("the accounting process did not start: "
                          f"{self.failure or 'no answer (see the log)'}")

    def fileno(self) -> int | None:
        return self.proc.stdout.fileno() if self.proc and self.proc.stdout else None

    def _read(self) -> bool:
        """Append what the worker wrote to inbuf; False at its end."""
        fd = self.fileno()
        got = 0
        while fd is not None and got < READ_MAX:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.inbuf += data
            got += len(data)
        return True

    def _write(self, data: bytes) -> None:
        """All of data to the worker; while its input is full, its output is read (each
        end waiting on the other would be a deadlock)."""
        assert self.proc is not None and self.proc.stdin is not None
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                out = self.fileno()
                readable = select.select([out], [fd], [], STOP_TIMEOUT)[0]
                if readable and not self._read():
                    raise BrokenPipeError("the accounting process exited") from None

    def on_readable(self, mask: int = 0) -> None:
        alive = self._read()
        for msg in split_frames(self.inbuf):
            self._handle(msg)
        if not alive:
            self._died()

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "records":
            _, records, rejects, acked = msg
            while self.unacked and self.unacked[0][0] <= acked:
                self.unacked.popleft()
            # What the risk engine, the counts and fleetrisk read of each (HandedRecord).
            records = [r for r in decode_records(records)
                       if self.seq_seen is None or r.seq > self.seq_seen]
            if records:
                self.seq_seen = records[-1].seq
                sent = sum(1 for r in records if r.sasl_user)
                self.directions["sent"] += sent
                self.directions["received"] += len(records) - sent
            if records or rejects:
                try:
                    self.on_records([*records, *map(decode_reject, rejects)])
                except Exception:
                    # The risk engine's bug must not lose the accounting (committed already).
                    self.errors += 1
                    log.exception("action=accounting-subscriber-error subscriber=risk")
        elif kind == "stats":
            self.last = msg[1]
        elif kind == "ready":
            self.ready, self.last = True, msg[1]
            if self.seq_seen is None:
                self.seq_seen = msg[2] - 1
        elif kind == "failed":        # its end of output follows: restarted with backoff
            self.failure = msg[1]
            self.error(f"accounting: the process did not start: {msg[1]}")
        elif kind == "error":
            self.error(f"accounting: {msg[1]}")

    # -- the data path (--stdin) ------------------------------------------------------------

    def on_chunk(self, source: str, chunk: bytes) -> None:
        """The daemon's stdin chunk for the worker too (files it reads itself)."""
        if not self.forwarding or source != STDIN:
            return
        self.chunks += 1
        self.unacked.append((self.chunks, chunk))
        if self.proc is None:
            return                    # kept for the next worker
        try:
            self._write(chunk_head(self.chunks, chunk))
            self._write(chunk)
        except (BrokenPipeError, OSError):
            self._died()
            return
        if len(self.inbuf) >= 4:      # read while writing: hand the records on now
            for msg in split_frames(self.inbuf):
                self._handle(msg)

    # -- death and restarts ----------------------------------------------------------------

    def _died(self) -> None:
        if self.proc is None:
            return
        code = self._reap(1.0)
        if self.stopping:
            return
        self.deaths += 1
        if time.monotonic() - self.started_at >= STABLE:
            self.backoff = BACKOFF[0]
        log.error("action=accounting-worker-died code=%s restart_in=%.0f", code, self.backoff)
        self.error(f"accounting process died (exit {code}); restarted in {self.backoff:.0f} s")
        self.loop.call_at("accounting-restart", self.clock() + self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF[1])

    def _reap(self, timeout: float) -> int | None:
        """Close our ends, wait for the worker (killed after timeout); its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        self.base = carry(self.base, self.last)
        if proc.stdout is not None:
            self.loop.unregister(proc.stdout.fileno())
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("action=accounting-worker-stuck (killed)")
            proc.kill()
            return proc.wait()

    def _on_restart(self, now: float) -> None:
        self.loop.cancel("accounting-restart")
        if self.proc is not None or self.stopping:
            return
        try:
            self.start()
        except OSError as exc:
            log.error("action=accounting-restart-failed error=%s", exc)
            self.error(f"accounting: {exc}")
            self.loop.call_at("accounting-restart", now + self.backoff)
            self.backoff = min(self.backoff * 2, BACKOFF[1])
            return
        self.restarts += 1
        log.info("action=accounting-worker-restarted pid=%d", self.proc.pid if self.proc else 0)

    # -- control ---------------------------------------------------------------------------

    def reload(self, cfg: Any, restart: bool) -> None:
        """SIGHUP: new rules and the stats log reopened in the worker; a changed accounting
        or sources section: a new worker on it (its positions: nothing lost)."""
        self.cfg = cfg
        if self.proc is None:
            return
        if restart:
            self.close_worker()
            self._on_restart(self.clock())
            return
        try:
            self._write(frame(("reload", cfg, self._rules_digest())))
        except (BrokenPipeError, OSError):
            self._died()

    def close_worker(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close its input: it commits, writes the stats log and exits; its last records
        and counters are handed on first."""
        if self.proc is None:
            return
        stopping, self.stopping = self.stopping, True
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while self.proc is not None and time.monotonic() < deadline:
            fd = self.fileno()
            if fd is not None and select.select([fd], [], [], deadline - time.monotonic())[0]:
                self.on_readable()
        if self.proc is not None:
            self._reap(0.0)
        self.stopping = stopping

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """The daemon stops (or its stdin ended: a longer timeout): the worker drains and
        exits."""
        self.loop.cancel("accounting-restart")
        if self.proc is None and self.unacked and not self.stopping:
            # A worker died with stdin chunks not committed: a new one accounts them first.
            try:
                self.start()
            except OSError as exc:
                log.error("action=accounting-restart-failed error=%s (chunks lost: %d)",
                          exc, len(self.unacked))
        self.stopping = True
        had = self.proc is not None
        self.close_worker(timeout)
        if had:
            p = self.last.get("process", {})
            log.info("action=accounting-stop pid=%s cpu=%.2f runqueue_wait=%.2f maxrss_kb=%s "
                     "written_seq=%s", p.get("pid"), p.get("cpu", 0.0),
                     p.get("runqueue_wait", 0.0), p.get("maxrss_kb"),
                     self.last.get("written_seq"))

    def query(self, req: dict[str, Any]) -> dict[str, Any]:
        """`logwatchctl messages`: the worker sends records only once they are committed."""
        return query(self.store, self.clock(), req)

    def stats(self) -> dict[str, Any]:
        st = {**self.last, **carry(self.base, self.last)} if self.base else dict(self.last)
        st["subscriber_errors"] = self.errors
        st["messages"] = dict(self.directions)    # exact over a kill of the worker
        st["worker"] = {"pid": self.proc.pid if self.proc else None, "restarts": self.restarts,
                        "deaths": self.deaths, "unacked_chunks": len(self.unacked)}
        return st
