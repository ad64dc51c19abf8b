"""Warn about configured log files that do not exist: at start, then rate-limited while they
stay missing (a typo in the path, or no syslog daemon writing the file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

GRACE = 10.0          # a file gone this long while running is reported (not a rotation gap)
FIRST_REPEAT = 60.0   # then again after this, doubling ...
MAX_REPEAT = 3600.0   # ... up to once an hour

HINT = ("check the path; is the syslog daemon running? (systemctl start rsyslog, "
        "or /etc/init.d/rsyslog start without systemd)")


@dataclass
class _State:
    since: float
    warn_at: float
    every: float = FIRST_REPEAT
    warnings: int = 0


class MissingFiles:
    """Tracks which followed paths are missing and logs about them, rate-limited."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._missing: dict[str, _State] = {}

    def update(self, path: str, exists: bool, now: float, at_start: bool = False) -> None:
        """Record whether path exists now; warn when it is due."""
        st = self._missing.get(path)
        if exists:
            if st is not None:
                del self._missing[path]
                if st.warnings:
                    self.log.info("action=file-appeared path=%s missing_for=%.0fs",
                                  path, now - st.since)
            return
        if st is None:
            st = self._missing[path] = _State(since=now, warn_at=now if at_start else now + GRACE)
        if now < st.warn_at:
            return
        st.warnings += 1
        self.log.warning("action=file-missing path=%s missing_for=%.0fs warning=%d hint=%r",
                         path, now - st.since, st.warnings, HINT)
        st.warn_at = now + st.every
        st.every = min(st.every * 2, MAX_REPEAT)

    def is_missing(self, path: str) -> bool:
        """Missing and already reported (a rotation gap shorter than GRACE is not)."""
        st = self._missing.get(path)
        return st is not None and st.warnings > 0
