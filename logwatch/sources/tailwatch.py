"""The file tailer's wake-ups: inotify watches on the directories and the files being read, an
epoll fd holding them and a "kick" pipe, and the fall back to polling (a mixin of FileTailer).

The watches only wake the loop up; what is read is decided by tail.py's stat checks.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
from typing import TYPE_CHECKING, Any

from logwatch.sources.inotify import Inotify, Mask

if TYPE_CHECKING:
    from logwatch.sources.tail import _Followed
    from logwatch.sources.tailreader import _Reader


def stat_or_none(path: str) -> os.stat_result | None:
    """os.stat(path), or None if it cannot be stat'ed."""
    with contextlib.suppress(OSError):
        return os.stat(path)
    return None


class TailWatches:
    """inotify / polling state of a FileTailer (which provides files, log, poll_interval)."""

    files: list[_Followed]
    log: logging.Logger
    poll_interval: float

    def _init_watches(self) -> None:
        self._inotify: Any = None
        self.polling = True
        # fileno() is an epoll fd holding the inotify fd and a "kick" pipe: a byte in the pipe
        # makes the daemon call process() again when work is left (first read after start,
        # a backlog bigger than one call's budget), which no inotify event would announce.
        self._epoll: select.epoll | None = None
        self._kick_r = self._kick_w = -1
        self._dir_wds: dict[str, int] = {}
        self._dir_ids: dict[str, tuple[int, int]] = {}
        self._wd_refs: dict[int, int] = {}

    def fileno(self) -> int | None:
        """The inotify fd to register for reading, or None when process() must be polled
        (no inotify, or a directory to watch does not exist yet)."""
        if self._epoll is None or self.polling or self._missing_dirs():
            return None
        return self._epoll.fileno()

    def _drain_events(self) -> None:
        """Empty the kick pipe and the inotify queue; watch directories (re)created."""
        if self._kick_r >= 0:
            try:
                os.read(self._kick_r, 4096)
            except BlockingIOError:
                pass
        if self._inotify is not None:
            try:
                # The events only wake us up; each file is re-checked below anyway.
                events = self._inotify.read()
            except OSError as exc:
                self.log.warning("action=inotify-read-error error=%s", exc)
                events = []
            gone = {e.wd for e in events if e.mask & Mask.IGNORED}
            for d, wd in list(self._dir_wds.items()):
                # A watched directory removed (perhaps made anew): watch it again once it is
                # there; meanwhile fileno() is None and the daemon polls us.
                st = stat_or_none(d)
                if wd in gone or st is None or (st.st_ino, st.st_dev) != self._dir_ids.get(d):
                    self._release_dir(d)
            if self._missing_dirs():
                self._watch_dirs()

    def _close_watches(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
            os.close(self._kick_r)
            os.close(self._kick_w)
            self._kick_r = self._kick_w = -1

    def _kick(self) -> None:
        if self._kick_w >= 0:
            try:
                os.write(self._kick_w, b"k")
            except BlockingIOError:
                pass              # already kicked


    def _setup_inotify(self) -> None:
        try:
            self._inotify = Inotify()
        except (OSError, AttributeError) as exc:      # AttributeError: a libc without inotify
            self._fall_back(f"inotify_init failed ({exc})")
            return
        self.polling = False
        self._epoll = select.epoll()
        self._kick_r, self._kick_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._inotify.fileno(), select.EPOLLIN)
        self._epoll.register(self._kick_r, select.EPOLLIN)
        self._kick()              # read what is already there as soon as the loop runs
        self._watch_dirs()

    def _fall_back(self, why: str) -> None:
        if not self.polling or self._inotify is None:
            self.log.warning(
                "action=polling reason=%r interval=%.1fs files=%s",
                why, self.poll_interval, ",".join(f.path for f in self.files),
            )
        self.polling = True

    def _missing_dirs(self) -> list[str]:
        dirs = dict.fromkeys(os.path.dirname(f.path) for f in self.files)
        return [d for d in dirs if d not in self._dir_wds]

    def _watch_dirs(self) -> None:
        fl = Mask
        mask = (fl.CREATE | fl.MOVED_TO | fl.MOVED_FROM | fl.DELETE | fl.ATTRIB
                | fl.DELETE_SELF | fl.MOVE_SELF)
        for d in self._missing_dirs():
            try:
                self._dir_wds[d] = self._inotify.add_watch(d, mask)
                st = os.stat(d)
                self._dir_ids[d] = (st.st_ino, st.st_dev)
            except OSError as exc:
                self._release_dir(d)
                if exc.errno == errno.ENOENT:
                    continue          # retried from process(); the file is polled until then
                self._fall_back(f"cannot watch {d} ({exc})")
                return

    def _release_dir(self, d: str) -> None:
        wd = self._dir_wds.pop(d, None)
        self._dir_ids.pop(d, None)
        if wd is not None:
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass              # the kernel dropped it already

    def _add_wd(self, path: str, what: str) -> int | None:
        """A MODIFY watch on path's inode; watches are per inode, so they are counted."""
        if self._inotify is None or self.polling:
            return None
        try:
            wd = self._inotify.add_watch(path, Mask.MODIFY)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self._fall_back(f"cannot watch {what} ({exc})")
            return None
        self._wd_refs[wd] = self._wd_refs.get(wd, 0) + 1
        return wd

    def _release_wd(self, wd: int | None) -> None:
        if wd is None or self._inotify is None or wd not in self._wd_refs:
            return
        self._wd_refs[wd] -= 1
        if self._wd_refs[wd] <= 0:
            del self._wd_refs[wd]
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass              # already gone with its deleted inode

    def _watch_file(self, r: _Reader) -> None:
        # Through /proc the watch is on the inode we opened, even if renamed meanwhile.
        r.wd = self._add_wd(f"/proc/self/fd/{r.fd}", r.path)

    def _watch_new_path(self, f: _Followed, st: os.stat_result) -> None:
        """Be woken by the first write to a new, still empty file we do not read yet."""
        if f.path_wd is not None and f.path_wd[0] == st.st_ino:
            return
        self._unwatch_new_path(f)
        wd = self._add_wd(f.path, f.path)
        if wd is not None:
            f.path_wd = (st.st_ino, wd)

    def _unwatch_new_path(self, f: _Followed) -> None:
        if f.path_wd is not None:
            self._release_wd(f.path_wd[1])
            f.path_wd = None
