"""The accounting in the daemon: message lines of each chunk -> the correlator -> records,
published to subscribers at once, saved with the read positions, then written to the stats log.

Durability order (exactly once across kill -9): the open messages, the new records and the
sequence marks are staged in the transaction that saves the positions (effects.py calls
stage() then committed()); only committed records go to the stats log (fsynced), and at start
the records the store holds beyond the last seq in the stats log are written first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logwatch.clock import Clock, wall
from logwatch.daemon.accountingwire import (  # noqa: F401 (GC_THRESHOLD, record_dict: here too)
    GC_THRESHOLD,
    query,
    raise_gc_threshold,
    record_dict,
)
from logwatch.daemon.config import AccountingConfig
from logwatch.daemon.statslog import StatsLog
from logwatch.engine.messages import Correlator, MessageRecord, RejectedAttempt
from logwatch.parsing.messageparse import MessageParser
from logwatch.state import accounting as rows

log = logging.getLogger("logwatchd.accounting")

SWEEP_INTERVAL = 60.0            # expiry of open messages
PRUNE_INTERVAL = 3600.0          # records older than accounting.keep leave the store
PIECE = 256 * 1024               # bytes of lines parsed and correlated at a time


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or a no-op elsewhere."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):        # pragma: no cover - not glibc
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


# Parsing a piece frees large buffers between the open messages' small objects; glibc keeps
# those holes unless asked (whether it does depends on the order of allocations: 93 or
# 105 MB RSS for the same 100,000 open messages). Asked at most this often.
TRIM_INTERVAL = 1.0
malloc_trim = _malloc_trim()


@dataclass
class Subscriber:
    """Who wants the records (the risk engine, metrics, the web page); either may be None."""

    on_record: Callable[[MessageRecord], None] | None = None
    on_reject: Callable[[RejectedAttempt], None] | None = None
    name: str = ""


class Accounting:
    """The message parser, the correlator, the stats log and the subscribers."""

    def __init__(self, cfg: AccountingConfig, ruleset: Any, store: Any, clock: Clock = wall,
                 matcher: str = "auto") -> None:
        self.cfg, self.store, self.clock = cfg, store, clock
        self.parser = MessageParser(ruleset, clock, matcher)
        self.correlator = Correlator(cfg.max_open, cfg.max_age, clock)
        self.stats_log = StatsLog(cfg.stats_log) if cfg.stats_log else None
        self.subscribers: list[Subscriber] = []
        self.pending: list[MessageRecord] = []      # closed, not committed yet
        self.unwritten: list[MessageRecord] = []    # committed, not in the stats log yet
        self.written_seq = 0
        self._staged: tuple[list[Any], int] | None = None
        self._pruned_at = self._trimmed_at = 0.0
        self.errors = 0
        # Messages since start by direction (/metrics): by a SASL ID "sent", else "received",
        # as the per-minute counts (engine/counts.py) tell them apart.
        self.directions = {"sent": 0, "received": 0}

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open messages and marks from the store; the records the stats log lacks written."""
        raise_gc_threshold()
        marks = rows.marks(self.store)
        self.correlator.load(rows.load_open(self.store), marks.get(rows.NEXT_SEQ, 1))
        self.written_seq = marks.get(rows.WRITTEN_SEQ, 0)
        if self.stats_log is not None:
            self.written_seq = max(self.written_seq, self.stats_log.last_seq())
        self.unwritten = rows.records_after(self.store, self.written_seq)
        # A new state database next to an old stats log: numbers go on from the log's.
        self.correlator.next_seq = max(self.correlator.next_seq, self.written_seq + 1)
        if self.stats_log is None:
            self.written_seq = max([self.written_seq] + [r.seq for r in self.unwritten])
            self.unwritten = []
        log.info("action=accounting-start open=%d next_seq=%d unwritten=%d stats_log=%s",
                 len(self.correlator.open), self.correlator.next_seq, len(self.unwritten),
                 self.cfg.stats_log or "none")
        self.flush()

    # -- the data path --------------------------------------------------------------------

    def on_chunk(self, chunk: bytes) -> None:
        # In pieces of whole lines: the lines and fields of a piece are freed before the
        # next, so they do not fragment the heap the open messages stay in (RSS).
        start, size = 0, len(chunk)
        while start < size:
            end = chunk.rfind(b"\n", start, start + PIECE) + 1 if start + PIECE < size else size
            if end <= start:                      # one line longer than a piece
                end = chunk.find(b"\n", start + PIECE) + 1 or size
            records, rejects = self.correlator.feed_rows(self.parser.parse_rows(chunk[start:end]))
            self._publish(records, rejects)
            start = end

    def sweep(self) -> None:
        self._publish(self.correlator.sweep(), [])

    def _publish(self, records: list[MessageRecord], rejects: list[RejectedAttempt]) -> None:
        if records:
            self.pending.extend(records)
            sent = sum(1 for r in records if r.sasl_user)
            self.directions["sent"] += sent
            self.directions["received"] += len(records) - sent
        for sub in self.subscribers:
            failed = 0
            for call, items in ((sub.on_record, records), (sub.on_reject, rejects)):
                if call is None:
                    continue
                for item in items:
                    try:
                        call(item)
                    except Exception:
                        # A consumer's bug must not lose the accounting, nor the other
                        # records for this consumer; logged once per batch.
                        failed += 1
                        if failed == 1:
                            log.exception("action=accounting-subscriber-error subscriber=%s",
                                          sub.name)
            self.errors += failed

    # -- durability (called by effects.py around the positions' transaction) ---------------

    def stage(self, store: Any) -> None:
        """Inside the positions' transaction: what changed since the last commit."""
        changed, deleted = self.correlator.changes()
        rows.save(store, self.correlator.rows(changed), deleted, self.pending,
                  self.correlator.next_seq, self.written_seq)
        now = self.clock()
        if self.cfg.keep >= 0 and now - self._pruned_at >= PRUNE_INTERVAL:
            rows.prune(store, now - self.cfg.keep, self.written_seq)
            self._pruned_at = now
        self._staged = (changed, len(self.pending))

    def committed(self) -> None:
        """The staged transaction committed: those records may go to the stats log."""
        if self._staged is None:
            return
        changed, count = self._staged
        self._staged = None
        self.correlator.saved(changed)
        self.unwritten.extend(self.pending[:count])
        del self.pending[:count]
        self.flush()
        now = self.clock()
        if not 0 <= now - self._trimmed_at < TRIM_INTERVAL:
            self._trimmed_at = now
            malloc_trim()

    def staged_records(self) -> list[MessageRecord]:
        """The records of the staged transaction (committed once it is: before committed())."""
        return self.pending[:self._staged[1]] if self._staged is not None else []

    def aborted(self) -> None:
        """The staged transaction failed: everything stays pending for the next one."""
        self._staged = None

    def flush(self) -> None:
        """Committed records into the stats log (fsynced); kept for a retry on an error."""
        if not self.unwritten:
            return
        if self.stats_log is not None:
            try:
                self.stats_log.write(self.unwritten)
            except OSError as exc:
                if not self.stats_log.failed:
                    log.error("action=statslog-error path=%s error=%s", self.stats_log.path, exc)
                self.stats_log.failed = True
                self.stats_log.close()
                return
            self.stats_log.failed = False
        self.written_seq = self.unwritten[-1].seq
        self.unwritten = []

    # -- control --------------------------------------------------------------------------

    def reopen(self) -> None:
        """SIGHUP: reopen the stats log (logrotate without copytruncate)."""
        if self.stats_log is not None:
            self.stats_log.reopen()

    def reload(self, ruleset: Any, matcher: str) -> None:
        """SIGHUP: the reloaded message rules (counters kept) and the stats log reopened."""
        parser = MessageParser(ruleset, self.clock, matcher)
        parser.stats = self.parser.stats
        self.parser = parser
        self.reopen()

    def close(self) -> None:
        if self.stats_log is not None:
            self.stats_log.close()

    def query(self, req: dict[str, Any]) -> dict[str, Any]:
        """`logwatchctl messages`: the newest records, by SASL user, client IP, age."""
        return query(self.store, self.clock(), req, self.pending + self.unwritten)

    def stats(self) -> dict[str, Any]:
        return {**self.correlator.stats(), "parser": self.parser.counters(),
                "pending": len(self.pending), "unwritten": len(self.unwritten),
                "written_seq": self.written_seq, "subscriber_errors": self.errors,
                "stats_log": self.cfg.stats_log, "messages": dict(self.directions)}

