"""The policy service's writer: a child process with its own store connection (SQLite WAL: a
second connection; PostgreSQL: a second session) that writes the audit rows, the changed quota
counters and the verdicts' actions-log lines, so no store write, commit or WAL checkpoint
ever stands between a policy request and its reply.

A process, not a thread: a writer thread would share the GIL, and every hand-over of it
costs the loop a scheduler wake-up, milliseconds on a busy machine. The loop sends immutable
Batches (pickled frames; the child is our own program) down a pipe; the child answers one
line per batch ("ok" or "error ...") up another, read on the loop. It ignores SIGTERM/SIGINT
and stops at end of input after writing everything sent, so a stop, even a kill -9 of the
daemon, loses nothing that reached the pipe.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from logwatch.state.policystore import AuditRow, PolicyStore

log = logging.getLogger("logwatchd.policy")

TX_ROWS = 50                  # rows per transaction: the loop's own commits wait ~1 ms at most
AUTOCHECKPOINT = 1000         # SQLite's default (pages), given back to the loop's connection
PIPE_SIZE = 1 << 20           # a batch frame (500 counter rows: ~50 KB) never blocks the loop
START_TIMEOUT = 10.0
# A shared store: the peers' changed quota rows are read after each batch, from each peer's
# newest updated_at less this (its clock may step back a little; a row read twice is
# replaced, not added).
PEER_MARGIN = 1.0
NICE = 10
_LEN = struct.Struct("!I")
CounterRow = tuple[str, str, float, "array[int] | None"]   # quota, key, slice length, row


@dataclass(frozen=True, slots=True)
class Batch:
    """What one timer tick hands over: verdicts to store and log, counter rows (copies), and
    whether to prune the audit before a time or checkpoint the WAL."""

    rows: tuple[AuditRow, ...] = ()
    counts: tuple[CounterRow, ...] = ()
    prune_before: float | None = None
    checkpoint: bool = False
    now: float = 0.0              # when it was taken: the counters' updated_at
    read_peers: bool = False      # a shared store: answer with the peers' changed rows ...
    reset_peers: bool = False     # ... all of them (new windows after a reload)

    def empty(self) -> bool:
        return not (self.rows or self.counts or self.prune_before is not None
                    or self.checkpoint or self.read_peers)


def counts_text(values: array[int] | None) -> str:
    """A counter row as the store keeps it ("" once the key expired: the row is deleted)."""
    return "" if values is None else ",".join(map(str, values))


def write_batch(store: Any, actions: Any, batch: Batch) -> None:
    """Audit rows and counters, TX_ROWS to a transaction; then the actions-log lines."""
    pstore = PolicyStore(store)
    rows, counts = batch.rows, batch.counts
    for at in range(0, max(len(rows), len(counts)), TX_ROWS):
        texts = [(q, k, s, counts_text(v)) for q, k, s, v in counts[at:at + TX_ROWS]]
        with store.transaction():
            pstore.put_verdicts(rows[at:at + TX_ROWS])
            pstore.put_quota_counts(texts, batch.now)
    if batch.prune_before is not None:
        with store.transaction():
            pstore.prune_verdicts(batch.prune_before)
    for r in rows:
        actions.write("policy-verdict", r.decided_at, ip=r.client_address or None,
                      rule=r.rule, verdict=r.action, user=r.sasl_username or None,
                      sender=r.sender or None, recipient=r.recipient or None,
                      instance=r.instance or None, queue_id=r.queue_id or None)


class PolicyWriter:
    """The loop's end of the writer process: put() batches, on_readable() for its answers."""

    def __init__(self, url: str, node: str, actions_path: str | None, main: Any,
                 on_error: Callable[[str], None],
                 on_peers: Callable[[list[tuple[Any, ...]]], None] | None = None) -> None:
        self.setup = {"url": url, "node": node, "actions": actions_path}
        self.on_error = on_error
        self.on_peers = on_peers      # the peers' changed quota rows, as they come
        self._peer_failed = False
        # SQLite: a commit that finds the WAL long copies it into the database (fsyncs). The
        # loop's connection must never be the one: while the writer runs, only it does.
        self.main = main if not getattr(main, "shared", True) else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending = 0              # batches sent and not yet answered
        self.alive = False
        self.failures = 0             # batches the child could not write
        self._inbuf = b""

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(    # noqa: S603 - our own module, an argument list
            [sys.executable, "-m", "logwatch.daemon.policywriter"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass                      # over /proc/sys/fs/pipe-max-size: smaller frames block
        os.set_blocking(self.fileno(), False)
        self.alive = True
        self._send(self.setup)
        if not self.wait(START_TIMEOUT) or not self.alive or self.failures:
            self.close(0.0)
            raise OSError("the policy writer process did not start (see the log)")
        if self.main is not None:
            self.main.db.execute("PRAGMA wal_autocheckpoint=0")

    def fileno(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def _send(self, obj: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_LEN.pack(len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            self._died(f"cannot write to it: {exc}")
            return
        self.pending += 1

    def put(self, batch: Batch) -> bool:
        """Send a batch; False when the writer is gone (the caller writes it itself)."""
        if batch.empty():
            return True
        if not self.alive:
            return False
        self._send(batch)
        return self.alive

    def on_readable(self, mask: int = 0) -> None:
        """The child's answers: one frame (error, peer rows, peer error) per batch."""
        try:
            data = os.read(self.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not data:
            self._died("it exited")
            return
        self._inbuf += data
        while len(self._inbuf) >= _LEN.size:
            size = _LEN.unpack_from(self._inbuf)[0]
            if len(self._inbuf) < _LEN.size + size:
                break
            frame = self._inbuf[_LEN.size:_LEN.size + size]
            self._inbuf = self._inbuf[_LEN.size + size:]
            self.pending -= 1
            self._answer(*pickle.loads(frame))    # noqa: S301 - our own child

    def _answer(self, error: str | None, peers: list[tuple[Any, ...]] | None,
                peer_error: str | None) -> None:
        if error is not None:
            self.failures += 1
            self.on_error(f"policy writer: {error}")
            log.error("action=policy-flush-error error=%s", error)
        if peer_error is not None:
            if not self._peer_failed:      # the store away: the peers' last counts are kept
                log.error("action=policy-peer-quotas result=failed error=%s", peer_error)
            self._peer_failed = True
        elif peers is not None:
            self._peer_failed = False
            if peers and self.on_peers is not None:
                self.on_peers(peers)

    def wait(self, timeout: float) -> bool:
        """Block until every batch sent is answered (True) or timeout passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending > 0 and self.alive:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.fileno()], [], [], left)[0]:
                self.on_readable()
        return self.pending <= 0

    def _died(self, why: str) -> None:
        if self.alive:
            self.alive = False
            self.on_error(f"policy writer: {why}")
            log.error("action=policy-writer-gone reason=%r (the loop writes instead; "
                      "batches unanswered: %d)", why, self.pending)
            self._give_back_checkpoints()

    def _give_back_checkpoints(self) -> None:
        if self.main is not None:
            self.main.db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT}")
            self.main = None

    def close(self, timeout: float = 5.0) -> None:
        """End of input: the child writes what it has and exits."""
        if self.proc is None:
            return
        self.wait(timeout)
        self._give_back_checkpoints()
        self.alive = False
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("action=policy-writer-stuck (killed)")
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


# -- the child process -------------------------------------------------------------------


def _read_frame(inp: BinaryIO) -> Any:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    data = inp.read(_LEN.unpack(head)[0])
    return pickle.loads(data)       # noqa: S301 - frames come from our parent only


def read_peers(store: Any, marks: dict[str, float]) -> list[tuple[Any, ...]]:
    """The other nodes' quota rows changed since marks (updated in place)."""
    rows = PolicyStore(store).peer_quota_counts(marks, PEER_MARGIN)
    for node, *_, updated_at in rows:
        if updated_at > marks.get(node, float("-inf")):
            marks[node] = updated_at
    return rows


def answer(out: BinaryIO, reply: tuple[Any, ...]) -> None:
    data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        out.write(_LEN.pack(len(data)) + data)
        out.flush()
    except BrokenPipeError:
        pass            # the daemon died (kill -9): write the rest of what it sent


def child_main() -> int:
    """Open the store named by the first frame; write each batch; answer a frame for each."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)       # the parent stops us by closing the pipe
    try:
        os.nice(NICE)       # on a busy machine the loop (smtpd waiting) gets the CPU first
    except OSError:
        pass
    from logwatch.daemon.actionlog import ActionLog
    from logwatch.state.store import Store

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    setup = _read_frame(inp)
    if setup is None:
        return 0
    try:
        store = Store(url=setup["url"], node=setup["node"])
    except Exception as exc:
        answer(out, (f"cannot open the store: {exc}", None, None))
        return 1
    actions = ActionLog(setup["actions"])
    marks: dict[str, float] = {}        # peer node -> newest updated_at read
    answer(out, (None, None, None))
    while (batch := _read_frame(inp)) is not None:
        error = peer_error = None
        peers: list[tuple[Any, ...]] | None = None
        try:
            write_batch(store, actions, batch)
            if batch.checkpoint and not store.shared:
                store.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:      # the store full or broken: say so, keep going
            error = str(exc)
        if batch.read_peers:
            if batch.reset_peers:
                marks.clear()
            try:
                peers = read_peers(store, marks)
            except Exception as exc:
                peer_error = str(exc)
        answer(out, (error, peers, peer_error))
    actions.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
