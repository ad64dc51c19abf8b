"""Tell when one file (the whitelist) changes: inotify on its directory, mtime as the fallback."""

from __future__ import annotations

import logging
import os

from logwatch.sources.inotify import Inotify
from logwatch.sources.inotify import Mask as iflags

log = logging.getLogger("logwatchd.filewatch")


class FileWatch:
    """inotify watch of a file's directory; `changed()` says whether the file was touched."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._name = os.path.basename(self.path)
        self._inotify: Inotify | None = None
        try:
            inotify = Inotify()
            # The directory, not the file: editors and config tools replace files by rename,
            # and the file may not exist yet.
            inotify.add_watch(os.path.dirname(self.path),
                              iflags.CLOSE_WRITE | iflags.MOVED_TO | iflags.MOVED_FROM
                              | iflags.CREATE | iflags.DELETE | iflags.ATTRIB)
        except (OSError, AttributeError) as exc:    # no inotify: the daemon compares mtimes
            log.warning("action=filewatch-fallback path=%s error=%s (checking its mtime instead)",
                        self.path, exc)
            return
        self._inotify = inotify

    def fileno(self) -> int | None:
        """The fd to select on, or None when inotify is unavailable (poll mtimes then)."""
        return self._inotify.fileno() if self._inotify is not None else None

    def changed(self) -> bool:
        """Drain pending events; True if one of them concerns our file."""
        if self._inotify is None:
            return False
        events = self._inotify.read()
        return any(event.name == self._name for event in events)

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
