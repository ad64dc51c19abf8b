"""Follow log files through rotation (rename or copytruncate), deletion and restarts.

inotify (our ctypes binding, sources/inotify.py; the watches: tailwatch.py) only wakes the
loop; every ``process()`` re-checks each file with fstat/stat, so a lost or coalesced event,
or the polling fallback, cannot change what is read. Files rotated in between are found by rotated.py.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from logwatch.clock import Clock, wall
from logwatch.engine.model import Position
from logwatch.sources import DEFAULT_MAX_LINE, OnChunk
from logwatch.sources.missing import MissingFiles
from logwatch.sources.rotated import (
    file_fp,
    find_previous,
    first_line,
    fp_hex,
    next_rotated,
)
from logwatch.sources.tailreader import _end_of_last_line, _head_line, _Reader
from logwatch.sources.tailwatch import TailWatches, stat_or_none

LOG = logging.getLogger("logwatchd.sources.tail")

READ_MAX = 4 << 20            # at most this much per read (and per delivered chunk)
LINGER = 5.0                  # seconds a rotated file is still watched for late writes
BUDGET = 32 << 20             # bytes per file per process() call, so timers still run while
                              # a big backlog (--from-start, long downtime) is read
POLLING_ENV = "LOGWATCHD_POLLING"   # set (not "0"): poll, as without inotify (tests, debugging)
SEEN = 64                     # first lines of the last files read, to know their copies


@dataclass
class FileStats:
    """Counters of one followed file, over all its rotations."""

    lines: int = 0
    bytes: int = 0
    skipped_long: int = 0
    rotations: int = 0
    truncations: int = 0
    late_lines: int = 0       # lines written to a rotated file after we had switched away
    lost_bytes: int = 0       # bytes known to be unrecoverable (rotated file gone, no copy)
    missing: int = 0          # 1 while the path does not exist (reported: sources/missing.py)


@dataclass
class _Followed:
    """State of one configured path."""

    path: str
    cur: _Reader | None = None
    cur_is_path: bool = False          # False: cur is a rotated/deleted file being finished
    seen: deque = field(default_factory=lambda: deque(maxlen=SEEN))   # fingerprints read
    lingering: list[tuple[_Reader, float]] = field(default_factory=list)
    last_pos: Position | None = None
    path_wd: tuple[int, int] | None = None     # (inode, wd): watch on a new, still empty file
    budget: int = 0                            # bytes this process() call may still read
    stats: FileStats = field(default_factory=FileStats)


class FileTailer(TailWatches):
    """Follows files with inotify (or polling) and delivers chunks of complete lines."""

    name = "files"

    def __init__(
        self,
        paths: list[str],
        *,
        on_chunk: OnChunk,
        store: Any = None,
        from_start: bool = False,
        max_line: int = DEFAULT_MAX_LINE,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        log: logging.Logger | None = None,
        clock: Clock = wall,
    ) -> None:
        self.on_chunk = on_chunk
        self.clock = clock                  # wall time: "rotated from now on"
        self.store = store
        self.from_start = from_start
        self.max_line = max_line
        self.poll_interval = poll_interval
        self.log = log or LOG
        # "x.log" and "./x.log" are one file: followed once, shown under the first name given.
        self._names: dict[str, str] = {}
        for p in paths:
            self._names.setdefault(os.path.abspath(p), p)
        self.files = [_Followed(path=ap) for ap in self._names]
        # Bytes per file per process() call; the daemon lowers it while a policy service
        # waits on the same loop (the rest is read on the next turn).
        self.budget = BUDGET
        self._init_watches()
        self.closed = False
        if force_polling:
            self._fall_back("forced by configuration")
        elif os.environ.get(POLLING_ENV, "") not in ("", "0"):
            self._fall_back(f"forced by {POLLING_ENV}")
        else:
            self._setup_inotify()
        saved = store.load_positions() if store is not None else {}
        for f in self.files:
            self._start(f, saved.get(f.path))
        self._missing = MissingFiles(self.log)
        self.check_missing(at_start=True)

    # -- public interface -----------------------------------------------------

    def process(self) -> None:
        """Read what is available from every file (up to a budget) and deliver it."""
        if self.closed:       # reopening the files would deliver them again from offset 0
            return
        self._drain_events()
        now = time.monotonic()
        more = False
        for f in self.files:
            # Polled without inotify: no budget, nothing would call us back before the timer.
            f.budget = self.budget if self.fileno() is not None else 1 << 62
            self._step(f, now)
            more = more or f.budget <= 0
        if more:
            self._kick()
        self.check_missing()

    def check_missing(self, at_start: bool = False) -> None:
        """Warn about paths that do not exist (at start, then rate-limited); the daemon also
        calls this from a timer, as no inotify event comes for a file that never appears."""
        now = time.monotonic()
        for f in self.files:
            exists = (f.cur is not None and f.cur_is_path) or stat_or_none(f.path) is not None
            self._missing.update(self._names[f.path], exists, now, at_start)
            f.stats.missing = int(self._missing.is_missing(self._names[f.path]))

    def positions(self) -> list[Position]:
        """Where each file stands now: exactly the data delivered so far."""
        out = []
        for f in self.files:
            r = f.cur
            if r is not None:
                f.last_pos = Position(f.path, r.ino, r.dev, r.line_start, r.fingerprint())
            if f.last_pos is not None:
                out.append(f.last_pos)
        return out

    def save_positions(self) -> None:
        """Persist positions in the store (the daemon calls this every second and at stop)."""
        if self.store is not None:
            self.store.save_positions(self.positions())

    def stats(self) -> dict[str, dict[str, int]]:
        return {self._names[f.path]: asdict(f.stats) for f in self.files}

    def close(self) -> None:
        """Save positions and release every fd."""
        if self.closed:
            return
        self.save_positions()
        self.closed = True
        for f in self.files:
            for r, _ in f.lingering:
                self._close(r)
            f.lingering.clear()
            if f.cur is not None:
                self._close(f.cur)
                f.cur = None
        self._close_watches()

    def _close(self, r: _Reader) -> None:
        self._release_wd(r.wd)
        r.wd = None
        os.close(r.fd)

    # -- opening and start-up -------------------------------------------------

    def _open(self, path: str, offset: int | None) -> _Reader | None:
        """Open a regular file at offset (None: after its last complete line)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.log.warning("action=open-failed path=%s error=%s", path, exc)
            return None
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            self.log.warning("action=skip path=%s reason=not-a-regular-file", path)
            return None
        if offset is None:
            offset = _end_of_last_line(fd, st.st_size, self.max_line)
        r = _Reader(path, fd, st, offset, self.max_line)
        self._watch_file(r)
        return r

    def _open_exact(self, path: str, ident: tuple[int, int],
                    offset: int) -> tuple[_Reader | None, bool]:
        """Open path only if it is still the file chosen by a directory scan (ident): logrotate
        may rename it (path -> path.1 -> path.2) in between. (reader, False), or (None, True):
        it moved, scan again; (None, False): it cannot be opened."""
        r = self._open(path, offset)
        if r is None:
            # Gone since the scan (renamed, or removed by logrotate's rotate count).
            st = stat_or_none(path)
            return None, st is None or (st.st_ino, st.st_dev) != ident
        if (r.ino, r.dev) == ident:
            return r, False
        self.log.info("action=moved-before-open path=%s wanted_inode=%d found_inode=%d",
                      path, ident[0], r.ino)
        self._close(r)
        return None, True

    def _start(self, f: _Followed, pos: Position | None) -> None:
        """Choose where to begin: saved position, rotated predecessor, end or beginning."""
        st = stat_or_none(f.path)
        if pos is None:
            if st is not None:
                f.cur = self._open(f.path, 0 if self.from_start else None)
                f.cur_is_path = f.cur is not None
                if f.cur is not None and not self.from_start:
                    # History is not read: only files rotated from now on (_rotated_first).
                    f.cur.mtime_ns = max(f.cur.mtime_ns, round(self.clock() * 1e9))
            return
        f.last_pos = pos
        for _ in range(8):            # the file found may be renamed again before we open it
            if not self._resume(f, pos, st):
                return
            st = stat_or_none(f.path)

    def _resume(self, f: _Followed, pos: Position, st: os.stat_result | None) -> bool:
        """_start from a saved position; True: a rotation came meanwhile, look again."""
        if st is not None and (st.st_ino, st.st_dev) == (pos.inode, pos.dev):
            r, moved = self._open_exact(f.path, (pos.inode, pos.dev), pos.offset)
            if r is None:
                return moved
            if os.fstat(r.fd).st_size >= pos.offset \
                    and (not pos.fingerprint or r.fingerprint() == pos.fingerprint):
                f.cur, f.cur_is_path = r, True
                self.log.info("action=resume path=%s inode=%d offset=%d",
                              f.path, pos.inode, pos.offset)
                return False
            # Same inode but shorter or another first line: truncated (copytruncate) while
            # we were down; the rest of what we had not read is in the copy, if it is found.
            self._close(r)
            truncated = True
            found = find_previous(f.path, pos, st, by_inode=False)
        else:
            truncated = False
            found = find_previous(f.path, pos, st, by_inode=True)
        if found is None:
            self.log.warning(
                "action=resume-lost path=%s inode=%d offset=%d reason=previous-file-not-found",
                f.path, pos.inode, pos.offset)
            return False              # cur None: the current file is read from 0 by _step
        r, moved = self._open_exact(found.path, found.ident, pos.offset)
        if r is None:
            return moved
        if truncated:
            f.stats.truncations += 1
        else:
            f.stats.rotations += 1
        # The files rotated after it are found when it is finished (_leave).
        f.cur, f.cur_is_path = r, False
        self.log.info("action=resume-rotated path=%s from=%s offset=%d",
                      f.path, found.path, pos.offset)
        return False

    # -- the work -------------------------------------------------------------

    def _step(self, f: _Followed, now: float) -> None:
        if f.lingering:
            self._linger(f, now)
        for _ in range(16):           # a few transitions per call at most
            r = f.cur
            if r is None:
                r = self._open(f.path, 0)
                if r is None:
                    return
                self._unwatch_new_path(f)
                self.log.info("action=open path=%s inode=%d", f.path, r.ino)
                f.cur, f.cur_is_path = r, True
                continue
            if f.cur_is_path:
                if self._truncated(r):
                    self._on_truncate(f, r)
                    continue
                if r.read_pos == 0 and r.check_rotated and self._rotated_first(f, r):
                    continue
                if not self._read(f, r):
                    return
                st = stat_or_none(f.path)
                if st is not None and (st.st_ino, st.st_dev) == (r.ino, r.dev):
                    return
                f.cur_is_path = False
                self.log.info("action=rotated path=%s old_inode=%d offset=%d",
                              f.path, r.ino, r.read_pos)
                continue
            # A rotated file too may have been copytruncated before it was renamed.
            if self._truncated(r):
                self._on_truncate(f, r)
                continue
            if not self._read(f, r):
                return
            st = stat_or_none(f.path)
            if st is not None and (st.st_ino, st.st_dev) == (r.ino, r.dev):
                f.cur_is_path = True      # moved back (or the rename was undone)
                return
            if not self._leave(f, r, st, now):
                return
        self._kick()                  # more transitions than one call makes: come back soon

    def _leave(self, f: _Followed, r: _Reader, st: os.stat_result | None, now: float) -> bool:
        """r (rotated away) is read: go on with the oldest file rotated after it that we have
        not read (several rotations may have come since we looked), else with the path."""
        open_ids = {(r.ino, r.dev), *((x.ino, x.dev) for x, _ in f.lingering)}
        # A copy of what the path holds now (copytruncate between its copy and its truncate)
        # is no file of its own: the path is read from 0 next.
        seen = {*f.seen, r.fingerprint(), *(x.fingerprint() for x, _ in f.lingering),
                file_fp(f.path) if st is not None and st.st_size else ""}
        nxt = next_rotated(f.path, r.mtime_ns, None if st is None else (st.st_ino, st.st_dev),
                           open_ids, seen)
        # Switch to the path only once it has data: a single writer (syslog) has then moved
        # to it, so everything it wrote to the old one is there to be read first.
        if nxt is None and (st is None or st.st_size == 0):
            if st is not None:
                self._watch_new_path(f, st)
            return False
        if not self._read(f, r):
            return False
        # Open the very file chosen: renamed again since the scan, another file has its name.
        if nxt is not None:
            nr, moved = self._open_exact(nxt.path, nxt.ident, 0)
        else:
            assert st is not None
            nr, moved = self._open_exact(f.path, (st.st_ino, st.st_dev), 0)
        if moved:
            return True               # nothing changed here: _step looks again
        self._retire(f, now)
        f.stats.rotations += 1
        if nr is not None and nxt is not None:
            self.log.info("action=rotated-between path=%s reading=%s inode=%d",
                          f.path, nxt.path, nr.ino)
            f.cur, f.cur_is_path = nr, False
        elif nr is not None:
            self._unwatch_new_path(f)
            self.log.info("action=open path=%s inode=%d", f.path, nr.ino)
            # Copytruncated since the scan keeps its inode: before its first read, look
            # again for files rotated after the one just finished (the copy, _rotated_first).
            nr.check_rotated = True
            nr.mtime_ns = min(nr.mtime_ns, r.mtime_ns)
            f.cur, f.cur_is_path = nr, True
        return True

    def _rotated_first(self, f: _Followed, r: _Reader) -> bool:
        """Before the first read of a new file at the path: files rotated since our last read
        of the previous one (e.g. a copy copytruncate made of lines we never saw) come first."""
        try:
            if os.fstat(r.fd).st_size == 0:
                return False
        except OSError:
            return False
        open_ids = {(r.ino, r.dev), *((x.ino, x.dev) for x, _ in f.lingering)}
        # Not a copy of what r holds (copytruncate between its copy and its truncate).
        seen = {*f.seen, *(x.fingerprint() for x, _ in f.lingering), fp_hex(first_line(r.fd))}
        nxt = next_rotated(f.path, r.mtime_ns, (r.ino, r.dev), open_ids, seen)
        if nxt is None:
            return False
        nr, moved = self._open_exact(nxt.path, nxt.ident, 0)
        if nr is None:
            return moved              # True: renamed since the scan, _step looks again
        self.log.info("action=rotated-between path=%s reading=%s inode=%d",
                      f.path, nxt.path, nr.ino)
        self._close(r)
        f.cur, f.cur_is_path = nr, False
        f.stats.rotations += 1
        return True

    def _truncated(self, r: _Reader) -> bool:
        try:
            size = os.fstat(r.fd).st_size
        except OSError:
            return False
        if size < r.read_pos:
            return True
        # Truncated and rewritten (past our offset) before we looked: the first line changed.
        if r.fp is not None:
            return os.pread(r.fd, len(r.fp), 0) != r.fp
        return False

    def _on_truncate(self, f: _Followed, r: _Reader) -> None:
        fp = r.fingerprint()
        pos = Position(f.path, r.ino, r.dev, r.line_start, fp)
        found = find_previous(f.path, pos, os.fstat(r.fd), by_inode=False) if fp else None
        if found is not None:
            copy, moved = self._open_exact(found.path, found.ident, r.line_start)
            if moved:
                return                # r is unchanged, still truncated: _step looks again
        f.stats.truncations += 1
        if fp:
            f.seen.append(fp)         # its copy is data we read: never read it from 0 again
        if found is not None:
            if copy is not None:
                # Finish the copy logrotate made (then any file rotated after it, _leave),
                # then come back to the file from 0.
                self.log.info("action=truncated path=%s offset=%d rest-from=%s",
                              f.path, r.line_start, found.path)
                self._close(r)
                f.cur, f.cur_is_path = copy, False
                return
        self.log.info("action=truncated path=%s offset=%d copy=not-found",
                      f.path, r.line_start)
        r.read_pos = 0
        r.lb.reset()
        r.fp = None       # r.mtime_ns stays: what was rotated since is read first
        r.check_rotated = True

    def _retire(self, f: _Followed, now: float) -> None:
        """cur is finished: keep it a while for late writes, then let the next file come."""
        r = f.cur
        assert r is not None
        f.last_pos = Position(f.path, r.ino, r.dev, r.line_start, r.fingerprint())
        if r.fingerprint():
            f.seen.append(r.fingerprint())
        f.lingering.append((r, now + LINGER))
        f.cur = None

    def _linger(self, f: _Followed, now: float) -> None:
        keep = []
        for r, deadline in f.lingering:
            before = f.stats.lines
            done = self._read(f, r)
            if f.stats.lines != before:
                f.stats.late_lines += f.stats.lines - before
                self.log.warning("action=late-write path=%s inode=%d lines=%d",
                                 f.path, r.ino, f.stats.lines - before)
            if now < deadline or not done:
                keep.append((r, deadline))
                continue
            tail = r.lb.flush()
            if tail:
                f.stats.lines += 1
                self.on_chunk(self._names[f.path], tail)
            self._close(r)
        f.lingering = keep

    def _read(self, f: _Followed, r: _Reader) -> bool:
        """Read r to its end, delivering complete lines as they come; False when this call's
        budget ran out first, or r was found truncated (the next call handles it)."""
        name = self._names[f.path]
        st = f.stats
        while True:
            if f.budget <= 0:
                return False
            try:
                fst = os.fstat(r.fd)
                if fst.st_size <= r.read_pos:
                    return True
                data = os.pread(r.fd, min(fst.st_size - r.read_pos, READ_MAX, f.budget),
                                r.read_pos)
                if not data:
                    return True
                if r.fp is None and r.read_pos == 0:
                    r.fp = _head_line(data)
                if r.fp is not None and f.cur is r and os.pread(r.fd, len(r.fp), 0) != r.fp:
                    # Truncated (copytruncate) and rewritten since we last looked, maybe
                    # between the fstat and the pread: these bytes are the new file's, at
                    # the old offset. Drop them; the truncation is handled on the next call.
                    self._kick()
                    return False
                r.mtime_ns = max(r.mtime_ns, fst.st_mtime_ns)
            except OSError as exc:
                self.log.warning("action=read-error path=%s error=%s", f.path, exc)
                return True
            f.budget -= len(data)
            r.read_pos += len(data)
            lines, skipped = r.lb.lines, r.lb.skipped_long
            out = r.lb.feed(data)
            st.lines += r.lb.lines - lines
            st.skipped_long += r.lb.skipped_long - skipped
            if r.fp is None:
                r.fp = first_line(r.fd)
            if out:
                st.bytes += len(out)
                # Positions already include this chunk, so a consumer may commit them with it.
                self.on_chunk(name, out)
