"""The sources' fds on the loop: registered while a source has one, polled when it has none."""

from __future__ import annotations

from collections.abc import Callable

from logwatch.daemon.factory import Parts
from logwatch.daemon.loop import Loop
from logwatch.protocols import Source


class SourceFds:
    """Keeps the selector in step with each source's fd (it drops to polling, stdin ends)."""

    def __init__(self, parts: Parts, loop: Loop, pump: Callable[[Source], None],
                 poll_interval: Callable[[], float]) -> None:
        self.parts = parts
        self.loop = loop
        self.pump = pump
        self.poll_interval = poll_interval
        self.fds: dict[int, int | None] = {}
        loop.on_timer("poll", self._on_poll)

    def register(self) -> None:
        for src in self.parts.sources:
            self.sync(src)

    def unregister(self) -> None:
        for src in self.parts.sources:
            fd = self.fds.pop(id(src), None)
            if fd is not None:
                self.loop.unregister(fd)

    def sync(self, src: Source) -> None:
        old = self.fds.get(id(src))
        new = src.fileno()
        # Before the early return: a source polled from the start (no inotify) has old and
        # new both None, and without the timer it would never be read.
        if new is None and not self.loop.armed("poll"):
            self.loop.call_at("poll", self.loop.clock() + self.poll_interval())
        if old == new:
            return
        if old is not None:
            self.loop.unregister(old)
        if new is not None:
            self.loop.register(new, lambda m, s=src: self.pump(s))
        self.fds[id(src)] = new

    def _on_poll(self, now: float) -> None:
        for src in self.parts.sources:
            if src.fileno() is None:
                self.pump(src)
        self.loop.call_at("poll", now + self.poll_interval())
