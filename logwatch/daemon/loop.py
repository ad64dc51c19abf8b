"""The event loop: one selector for the fds, named timers, and the signal wakeup pipe.

Why `selectors` and not asyncio: the daemon watches a handful of fds (an inotify fd per source,
the control socket and its few clients, the signal pipe) and a handful of timers (the engine's
next expiry, position saves, the watchdog scan, sd_notify pings, the whitelist check). A plain
loop computing the earliest timer and blocking in select() is all that needs; asyncio would add
a framework, callbacks from other threads and hidden buffering for no gain, and every effector
call is a short blocking subprocess/DB write we want strictly ordered anyway.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections.abc import Callable, Iterable
from typing import Any

from logwatch.clock import Clock, wall

TimerHandler = Callable[[float], None]
MAX_WAIT = 60.0      # select() never sleeps longer: a lost timer costs at most a minute


class Loop:
    """Owns the selector, the named timers and the signals; the daemon registers callbacks."""

    def __init__(self, clock: Clock = wall) -> None:
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.timers: dict[str, float] = {}        # name -> when it is due
        self.handlers: dict[str, TimerHandler] = {}
        self.pending_signals: list[int] = []
        self.stopping = False
        self._sig_r: int | None = None

    # -- fds ------------------------------------------------------------------------

    def register(self, fd: Any, callback: Callable[[int], Any]) -> None:
        """Call callback(mask) whenever fd is readable."""
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def unregister(self, fd: Any) -> None:
        """Forget fd; one already gone (closed, never registered) is not an error."""
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # -- timers ---------------------------------------------------------------------

    def on_timer(self, name: str, handler: TimerHandler) -> None:
        """The one handler of the timer of that name (called with the time it ran)."""
        self.handlers[name] = handler

    def call_at(self, name: str, when: float) -> None:
        """(Re)arm the named timer."""
        self.timers[name] = when

    def cancel(self, name: str) -> None:
        self.timers.pop(name, None)

    def armed(self, name: str) -> bool:
        return name in self.timers

    def run_timers(self, now: float) -> None:
        """Run every due timer once; a one-shot handler re-arms itself if it wants to."""
        for name in [n for n, when in self.timers.items() if when <= now]:
            handler = self.handlers.get(name)
            if handler is not None:
                handler(now)

    # -- signals --------------------------------------------------------------------

    def setup_signals(self, signals: Iterable[int]) -> None:
        """Handlers only queue the signal; the wakeup fd makes select() return at once."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sig_r = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._on_signal)
        self.register(rfd, self._drain_signal_pipe)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pending_signals.append(signum)

    def _drain_signal_pipe(self, mask: int) -> None:
        try:
            while self._sig_r is not None and os.read(self._sig_r, 512):
                pass
        except BlockingIOError:
            pass

    def next_signal(self) -> int | None:
        return self.pending_signals.pop(0) if self.pending_signals else None

    # -- running --------------------------------------------------------------------

    def turn(self, busy: list[Callable[[], None]]) -> None:
        """One select() and the callbacks of the ready fds (those marked `urgent` first);
        busy callbacks (input readable without waiting, e.g. a regular file on stdin) make
        the wait 0 and run after them."""
        now = self.clock()
        nxt = min(self.timers.values(), default=now + MAX_WAIT)
        timeout = max(0.0, min(nxt - now, MAX_WAIT))
        try:
            ready = self.selector.select(0.0 if busy else timeout)
        except InterruptedError:
            ready = []
        if len(ready) > 1:
            # Policy replies first: an smtpd waits on them, a log chunk can wait a turn.
            ready.sort(key=lambda km: not getattr(km[0].data, "urgent", False))
        for key, mask in ready:
            key.data(mask)
            if self.pending_signals:
                break       # a signal (stop, reload) is handled before more work
        for pump in busy:
            if not self.pending_signals:
                pump()
