"""A ControlServer served by a selectors loop in a thread, as logwatchd serves it in its own:
select up to the next idle deadline, handle what is ready, close idle clients."""

from __future__ import annotations

import selectors
import threading
import time

from logwatch.services.control import IDLE_TIMEOUT, ControlServer


class ServedControl:
    """The control socket at `path`, answered by `handler`, until close()."""

    def __init__(self, path: str, handler, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.sel = selectors.DefaultSelector()
        self.server = ControlServer(path, handler, self.sel, idle_timeout=idle_timeout)
        self.server.start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            deadline = self.server.next_deadline()
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            for key, mask in self.sel.select(wait):
                key.data(mask)
            self.server.expire_idle()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()
        self.sel.close()
