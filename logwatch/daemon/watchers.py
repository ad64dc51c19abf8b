"""Small loop clients of the daemon: the whitelist file watch and the sendmail watchdog runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from logwatch.daemon.factory import Parts, file_mtime
from logwatch.daemon.loop import Loop
from logwatch.parsing.events import Event
from logwatch.sources.filewatch import FileWatch

log = logging.getLogger("logwatchd.daemon")

WHITELIST_CHECK_INTERVAL = 2.0   # mtime check of the whitelist file when inotify is missing


class WhitelistWatch:
    """Calls changed() as soon as the whitelist file changes: inotify, or an mtime check on
    the loop's "whitelist" timer without it."""

    def __init__(self, loop: Loop, path: Callable[[], str | None],
                 changed: Callable[[], Any]) -> None:
        self.loop = loop
        self.path = path              # the running config's whitelist (a reload changes it)
        self.changed = changed
        self.mtime: int | None = None
        self.watch: FileWatch | None = None
        loop.on_timer("whitelist", self._on_timer)

    def note_read(self, path: str | None) -> None:
        """The file is being read now: changes are counted from here."""
        self.mtime = file_mtime(path)

    def schedule(self, now: float) -> None:
        if self.watch is None or self.watch.fileno() is None:
            self.loop.call_at("whitelist", now + WHITELIST_CHECK_INTERVAL)

    def follow(self, path: str | None) -> None:
        """Watch that file from now on (None: none)."""
        if self.watch is not None:
            fd = self.watch.fileno()
            if fd is not None:
                self.loop.unregister(fd)
            self.watch.close()
            self.watch = None
        if not path:
            return
        self.watch = watch = FileWatch(path)
        fd = watch.fileno()
        if fd is None:
            self.loop.call_at("whitelist", self.loop.clock() + WHITELIST_CHECK_INTERVAL)
        else:
            self.loop.cancel("whitelist")
            self.loop.register(fd, lambda _mask: watch.changed() and self.changed())

    def _on_timer(self, now: float) -> None:
        self.loop.call_at("whitelist", now + WHITELIST_CHECK_INTERVAL)
        if file_mtime(self.path()) != self.mtime:
            self.changed()


class WatchdogRuns:
    """Runs the sendmail watchdog on the loop's "watchdog" timer; its kills become events."""

    def __init__(self, parts: Parts, loop: Loop, feed: Callable[[Sequence[Event]], None],
                 error: Callable[[str], None]) -> None:
        self.parts = parts
        self.loop = loop
        self.feed = feed
        self.error = error
        loop.on_timer("watchdog", self._on_timer)

    def schedule(self, now: float) -> None:
        watchdog = self.parts.watchdog
        interval = watchdog.interval() if watchdog is not None else None
        if interval is None:
            self.loop.cancel("watchdog")
            return
        pending = watchdog.next_deadline()    # a SIGKILL due after the grace
        self.loop.call_at("watchdog", now + interval if pending is None
                          else min(now + interval, pending))

    def _on_timer(self, now: float) -> None:
        watchdog = self.parts.watchdog
        try:
            reports = watchdog.run_once()   # never blocks: SIGKILLs come on a later run
        except Exception as exc:
            self.error(f"watchdog: {exc}")
            log.exception("action=watchdog-error")
            reports = []
        events = []
        for rep in reports:
            if rep.signal is not None or rep.outcome == "dry-run":
                self.parts.actions.write("kill", now, pid=rep.pid, ip=rep.ip,
                                         age=f"{rep.age:.0f}", signal=rep.signal,
                                         outcome=rep.outcome, title=rep.title)
            ev = watchdog.to_event(rep)
            if ev is not None:
                events.append(ev)
        if events:
            self.feed(events)
        self.schedule(self.loop.clock())


class ServiceTimers:
    """The services' idle clients are closed on the loop's "control" timer (64 idle
    connections would lock everyone out)."""

    def __init__(self, parts: Parts, loop: Loop) -> None:
        self.parts = parts
        self.loop = loop
        loop.on_timer("control", self._on_timer)

    def schedule(self) -> None:
        deadlines = [d for s in self.parts.services if (d := s.next_deadline()) is not None]
        if deadlines:
            self.loop.call_at("control", min(deadlines))
        else:
            self.loop.cancel("control")

    def _on_timer(self, now: float) -> None:
        for service in self.parts.services:
            service.expire_idle(now)


class SdWatchdog:
    """systemd's WatchdogSec=: pinged twice per period on the loop's "sd_watchdog" timer."""

    def __init__(self, loop: Loop, notify: Callable[[str], None],
                 period: Callable[[], float | None]) -> None:
        self.loop = loop
        self.notify = notify
        self.period = period
        self.interval = 0.0
        loop.on_timer("sd_watchdog", self._on_timer)

    def schedule(self, now: float) -> None:
        period = self.period()
        if period:
            self.interval = period / 2
            self.loop.call_at("sd_watchdog", now)

    def _on_timer(self, now: float) -> None:
        self.notify("WATCHDOG=1")
        self.loop.call_at("sd_watchdog", now + self.interval)
