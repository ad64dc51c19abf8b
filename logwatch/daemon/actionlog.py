"""Stats log: one LTSV line per action (time, action, ip, reason...), for grep/awk and graphs."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from logwatch.clock import Clock, wall

log = logging.getLogger("logwatchd.actionlog")


def _clean(value: object) -> str:
    """LTSV values may hold neither tabs nor newlines; replace them rather than drop the line."""
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return text


def format_line(action: str, when: float, **fields: object) -> str:
    """`time:ISO8601<TAB>action:ACTION<TAB>key:value...` (None values are left out)."""
    stamp = datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    parts = [f"time:{stamp}", f"action:{_clean(action)}"]
    parts.extend(f"{k}:{_clean(v)}" for k, v in fields.items() if v is not None)
    return "\t".join(parts) + "\n"


class ActionLog:
    """Appends LTSV lines to a file, reopened when logrotate moved it away."""

    def __init__(self, path: str | None, clock: Clock = wall) -> None:
        self.path = path
        self.clock = clock
        self._fh = None
        self._ident: tuple[int, int] | None = None
        self._failed = False

    def _open(self) -> None:
        assert self.path is not None
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # User names and IPs: never world-readable, whatever the umask or an older 0644 file.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o027:
                os.fchmod(fd, st.st_mode & 0o7750)
        except OSError:
            os.close(fd)
            raise
        self._fh = open(fd, "a", encoding="utf-8")  # kept open between writes
        self._ident = (st.st_dev, st.st_ino)

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ident

    def write(self, action: str, when: float | None = None, **fields: object) -> None:
        """Append one line; errors are logged once and never stop the daemon."""
        if not self.path:
            return
        line = format_line(action, self.clock() if when is None else when, **fields)
        try:
            if self._fh is None or self._rotated():
                self.close()
                self._open()
            assert self._fh is not None
            self._fh.write(line)
            self._fh.flush()
            self._failed = False
        except OSError as exc:
            if not self._failed:
                log.error("action=actionlog-error path=%s error=%s", self.path, exc)
            self._failed = True
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
