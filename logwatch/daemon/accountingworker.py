"""The accounting process: `python -m logwatch.daemon.accountingworker`, started by the daemon
(accountingside.py) so that message parsing and correlation run on a core of their own.

It reads the logs itself: its own sources built from the daemon's sources section, their
positions and journal cursor under "accounting:" names (accountingwire.PrefixedStore), its own
store connection, and today's Accounting (parser, correlator, stats log). After each chunk
(at most COMMIT_BYTES when catching up) ONE transaction saves its positions and
Accounting.stage(); then the committed records go to the daemon and into the stats log: a
kill -9 of either process neither loses nor repeats a record. With --stdin the daemon forwards
its chunks (numbered; the count is saved with the commit, so a chunk sent again after a
restart is skipped). It ignores SIGTERM/SIGINT/SIGHUP, stops at the end of its input, and dies
with the daemon (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import resource
import select
import signal
import sys
import time
from dataclasses import replace
from typing import Any

from logwatch.daemon.accounting import Accounting, Subscriber, malloc_trim
from logwatch.daemon.accountingwire import (
    POSITION_PREFIX,
    PrefixedStore,
    encode_records,
    encode_reject,
    frame,
    rules_digest,
    split_frames,
    write_all,
)

log = logging.getLogger("logwatchd.accounting")

COMMIT_BYTES = 512 << 10      # a commit at least this often while catching up (RSS, latency)
SOURCE_BUDGET = 1 << 20       # bytes per file per read: a chunk is committed as a whole
SWEEP_INTERVAL = 60.0
STATS_INTERVAL = 1.0          # the counters go to the daemon at most this often
IDLE_TRIM = 1.0               # quiet this long after a commit: the heap's free pages go back
RETRY_INTERVAL = 1.0          # a failed commit is retried
LOCK_TIMEOUT = 30.0           # a worker of a daemon killed just now may still be ending
STDIN_CURSOR = POSITION_PREFIX + "stdin"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL when the daemon dies (kill -9 included); exit if it is gone already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):       # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        os._exit(0)


def lock_state(state_dir: str) -> int:
    """One worker per state directory: the one of a daemon killed a moment ago must be gone
    before this one reads the positions and appends to the stats log."""
    fd = os.open(os.path.join(state_dir, "accounting.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError("another accounting process holds "
                              f"{state_dir}/accounting.lock") from None
            time.sleep(0.05)


def load_rules(cfg: Any, checked: str | None, defer: bool = False) -> Any:
    """The configured rules, self-checked unless the daemon just checked the same rules
    (`checked`: its ruleset's rules_digest); `defer`: its digest comes later (verify_rules)."""
    from logwatch.daemon.factory import effective_rules_dirs
    from logwatch.parsing.rules import load_ruleset

    dirs = effective_rules_dirs(cfg)
    if checked is None and not defer:
        return load_ruleset(dirs, cfg.rules.local_dir)
    ruleset = load_ruleset(dirs, cfg.rules.local_dir, check=False)
    if not defer:
        verify_rules(ruleset, checked)
    return ruleset


def verify_rules(ruleset: Any, checked: str | None) -> None:
    """load_ruleset()'s self-checks (0.3 s of CPU) unless `checked` is the digest of these very
    rules: the digest of what was loaded, not of the files, so an edit since the daemon's load
    (even during ours) shows as a difference. SelfTestError as load_ruleset's."""
    from logwatch.parsing import rules as rules_module

    if checked is not None and rules_digest(ruleset) == checked:
        return
    problems = rules_module.check_rules([*ruleset.rules, *ruleset.message_rules])
    if problems:
        raise rules_module.SelfTestError(
            f"{len(problems)} rule self-test failure(s) on Python {sys.version.split()[0]}:\n"
            + "\n".join(problems), len(problems))


def usage() -> dict[str, Any]:
    """This process's CPU seconds and memory (the daemon's wait4() does not see them)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        rss = 0
    try:        # on a run queue, not running: the machine's other load (bench figures)
        with open("/proc/self/schedstat") as fh:
            waited = int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waited = 0.0
    return {"pid": os.getpid(), "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss,
            "rss_kb": rss, "runqueue_wait": waited}


class Worker:
    """The accounting on its own selectors loop: sources, frames from the daemon, timers."""

    def __init__(self, setup: dict[str, Any], inp: int, out: int) -> None:
        from logwatch.state.store import Store

        self.cfg, self.inp, self.out = setup["cfg"], inp, out
        self.session = setup["session"]
        self.stdin = bool(setup["stdin"])
        self.store = Store(url=setup["url"], node=setup["node"])
        # At the daemon's start its rules are checked while we load ours: its digest follows
        # (child_main() waits for it before any data).
        self.rules_later = bool(setup.get("rules_later"))
        self.ruleset = ruleset = load_rules(self.cfg, setup.get("rules_digest"),
                                            self.rules_later)
        self.acct = Accounting(self.cfg.accounting, ruleset, self.store,
                               matcher=self.cfg.rules.matcher)
        self.rejects: list[Any] = []
        self.acct.subscribe(Subscriber(on_reject=self.rejects.append, name="daemon"))
        self.acct.start()
        self.chunks = self._saved_chunks() if self.stdin else 0
        self.sources = self._make_sources()     # files and journal; stdin is forwarded
        self.inbuf = bytearray()
        self.uncommitted = 0          # bytes accounted since the last commit
        self.dirty = False
        now = time.monotonic()
        self.sweep_at, self.poll_at, self.retry_at = now + SWEEP_INTERVAL, now, None
        self.stats_sent, self.stats_due = 0.0, False
        self.trim_at: float | None = None       # after the last commit of a busy spell

    def _make_sources(self) -> list[Any]:
        from logwatch.sources import SourceContext, build_sources

        section = replace(self.cfg.sources, stdin=False)
        sources = build_sources(section, SourceContext(self.on_chunk, PrefixedStore(self.store)))
        for src in sources:
            if hasattr(src, "budget"):
                src.budget = SOURCE_BUDGET
        return sources

    def _saved_chunks(self) -> int:
        """Chunks of this daemon's stdin already committed by a worker before us."""
        session, _, count = (self.store.get_cursor(STDIN_CURSOR) or "").partition(" ")
        return int(count) if session == self.session and count.isdigit() else 0

    # -- the data path ---------------------------------------------------------------------

    def on_chunk(self, source: str, chunk: bytes) -> None:
        """Whole lines of a source (its positions include them already)."""
        self.acct.on_chunk(chunk)
        self.dirty = True
        self.uncommitted += len(chunk)
        if self.uncommitted >= COMMIT_BYTES:
            self.commit()

    def commit(self) -> None:
        """Positions + the accounting's changes in one transaction; then the records to the
        daemon (they are in the store: `logwatchctl messages` finds them) and the stats log."""
        if not self.dirty:
            return
        try:
            with self.store.transaction():
                for src in self.sources:
                    src.save_positions()
                if self.stdin:
                    self.store.set_cursor(STDIN_CURSOR, f"{self.session} {self.chunks}")
                self.acct.stage(self.store)
        except Exception as exc:      # the store away or full: all stays pending, retried
            self.acct.aborted()
            if self.retry_at is None:
                log.error("action=accounting-commit-error error=%s (retried)", exc)
                self.send(("error", f"commit: {exc}"))
            self.retry_at = time.monotonic() + RETRY_INTERVAL
            return
        self.retry_at = None
        self.dirty, self.uncommitted = False, 0
        records, rejects = self.acct.staged_records(), self.rejects
        self.rejects = []
        if records or rejects or self.stdin:
            self.send(("records", encode_records(records),
                       [encode_reject(a) for a in rejects], self.chunks))
        self.acct.committed()
        self.stats_due = True
        self.trim_at = time.monotonic() + IDLE_TRIM

    def send(self, obj: object) -> None:
        try:
            write_all(self.out, frame(obj))
        except BrokenPipeError:
            pass            # the daemon is gone: our own commits keep everything

    def send_stats(self, final: bool = False) -> None:
        self.send(("stats", {**self.acct.stats(), "process": usage(), "final": final}))
        self.stats_sent, self.stats_due = time.monotonic(), False

    def resend(self, after: int | None) -> None:
        """The records a worker before us committed but could not hand over (killed)."""
        if after is None:
            return
        from logwatch.state import accounting as rows

        records = rows.records_after(self.store, after)
        if records:
            log.info("action=accounting-resend records=%d after_seq=%d", len(records), after)
            self.send(("records", encode_records(records), [], self.chunks))

    # -- frames from the daemon ------------------------------------------------------------

    def read_input(self) -> bool:
        """Frames waiting on our input; False at its end (the daemon stops us)."""
        while True:
            try:
                data = os.read(self.inp, 1 << 20)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.inbuf += data
            for msg in split_frames(self.inbuf):
                self.handle(msg)

    def handle(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "chunk":
            _, number, chunk = msg
            if number > self.chunks:          # not committed by a worker before us
                self.chunks = number
                self.on_chunk("stdin", chunk)
        elif msg[0] == "reload":
            cfg = msg[1]
            try:
                ruleset = load_rules(cfg, msg[2] if len(msg) > 2 else None)
            except Exception as exc:       # the daemon loaded them: a race with an edit
                log.error("action=accounting-reload-error error=%s", exc)
                self.send(("error", f"reload: {exc}"))
                return
            self.cfg, self.ruleset = cfg, ruleset
            self.acct.reload(ruleset, cfg.rules.matcher)
            log.info("action=accounting-reload rules=%d", len(ruleset))

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        os.set_blocking(self.inp, False)
        for src in self.sources:
            self.pump(src)          # --from-start data is read before the first wait
        self.dirty = True             # our own positions exist from now on
        self.commit()
        self.send_stats()
        while True:
            fds = {src.fileno(): src for src in self.sources if src.fileno() is not None}
            ready = select.select([self.inp, *fds], [], [], self.timeout())[0]
            if not ready and self.trim_at is not None and time.monotonic() >= self.trim_at:
                # Committed() trims at most once a second while busy: the last of a busy
                # spell (catching up) may have been skipped, and RSS would stay high.
                self.trim_at = None
                malloc_trim()
            if self.inp in ready and not self.read_input():
                break
            now = time.monotonic()
            polled = now >= self.poll_at
            if polled:
                self.poll_at = now + self.cfg.sources.poll_interval
            for src in self.sources:
                fd = src.fileno()
                if fd in ready or (fd is None and polled):
                    self.pump(src)
            self.timers(now)
            self.commit()
            if self.stats_due and now - self.stats_sent >= STATS_INTERVAL:
                self.send_stats()
        self.stop()

    def timeout(self) -> float:
        now = time.monotonic()
        due = [self.sweep_at, self.poll_at if any(s.fileno() is None for s in self.sources)
               else now + 60.0]
        if self.retry_at is not None:
            due.append(self.retry_at)
        if self.stats_due:
            due.append(self.stats_sent + STATS_INTERVAL)
        if self.trim_at is not None:
            due.append(self.trim_at)
        return max(0.0, min(due) - now)

    def timers(self, now: float) -> None:
        if now >= self.sweep_at:
            self.sweep_at = now + SWEEP_INTERVAL
            self.acct.sweep()
            self.acct.flush()         # a stats log that failed is retried
            self.dirty = True

    def pump(self, src: Any) -> None:
        try:
            src.process()
        except Exception as exc:       # a source failing must not end the accounting
            log.exception("action=accounting-source-error")
            self.send(("error", f"source {type(src).__name__}: {exc}"))

    def stop(self) -> None:
        """End of input: commit, close the sources, the last counters (with our rusage)."""
        self.dirty = True
        self.commit()
        for src in self.sources:
            try:
                src.close()
            except Exception as exc:
                log.error("action=accounting-source-close-error error=%s", exc)
        self.send_stats(final=True)
        self.acct.close()
        self.store.close()


def wait_rules(worker: Worker, inp: int, buf: bytearray, msgs: list[Any]) -> list[Any]:
    """Read frames until the daemon's ("rules", digest); verify_rules() with it. The other
    frames read meanwhile are returned, in order, for the worker to handle."""
    kept: list[Any] = []
    while True:
        for i, msg in enumerate(msgs):
            if msg[0] == "rules":
                verify_rules(worker.ruleset, msg[1])
                return kept + msgs[:i] + msgs[i + 1:]
        kept += msgs
        data = os.read(inp, 1 << 16)
        if not data:
            raise OSError("the daemon closed the pipe before its rules were checked")
        buf += data
        msgs = split_frames(buf)


def child_main() -> int:
    """Read the setup frame, lock, start the accounting, run until the end of input."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)        # the daemon stops us by closing the pipe
    inp, out = sys.stdin.fileno(), sys.stdout.fileno()
    buf = bytearray()
    while not (msgs := split_frames(buf)):
        data = os.read(inp, 1 << 16)
        if not data:
            return 0
        buf += data
    setup = msgs[0]
    die_with_parent(setup["parent"])
    from logwatch.daemon.main import setup_logging

    setup_logging(setup["cfg"].daemon.log, setup.get("debug", False))
    # The daemon follows the same files and logs their events (opened, rotated, missing):
    # once is enough.
    logging.getLogger("logwatchd.sources").setLevel(logging.ERROR)
    try:
        lock_state(setup["state_dir"])
        worker = Worker(setup, inp, out)
        if worker.rules_later:
            msgs = wait_rules(worker, inp, buf, msgs[1:])
        else:
            msgs = msgs[1:]
    except Exception as exc:
        log.error("action=accounting-start-failed error=%s", exc)
        write_all(out, frame(("failed", str(exc))))
        return 1
    write_all(out, frame(("ready", worker.acct.stats(), worker.acct.correlator.next_seq)))
    worker.resend(setup.get("resend_after"))
    worker.inbuf = buf            # the rest of a frame that came with the setup
    for msg in msgs:
        worker.handle(msg)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
