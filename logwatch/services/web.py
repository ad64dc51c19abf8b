"""The web service: /metrics, the status page and its JSON on web.listen (--web-listen),
served on the daemon's selector by logwatch/web/http.py; every answer comes from the control
commands (the handler the daemon gives every service), never from the daemon's fields."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from logwatch.util.checks import parse_listen

log = logging.getLogger("logwatchd.web")


class WebService:
    """Service (protocols.py) around an HttpServer answering with a WebApp."""

    name = "web"

    def __init__(self, listen: str, token: str | None, handler: Callable[[dict[str, Any]],
                 dict[str, Any]], selector: Any, clock: Callable[[], float]) -> None:
        from logwatch.web.app import WebApp
        from logwatch.web.http import HttpServer

        host, port = parse_listen(listen)
        self.app = WebApp(handler, token, clock, host)
        self.server = HttpServer(host, port, self.app, selector, clock)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()
        host = self.server.host
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        log.info("action=web-listen address=%s:%d token=%s", host, self.server.port,
                 "set" if self.app.token else "none")
        if not loopback and self.app.token is None:
            log.warning("action=web-listen-public address=%s read-only page and metrics "
                        "reachable beyond this host", host)

    def next_deadline(self) -> float | None:
        return self.server.next_deadline()

    def expire_idle(self, now: float | None = None) -> int:
        return self.server.expire_idle(now)

    def close(self) -> None:
        self.server.close()


def build(cfg: Any, handler: Callable[[dict[str, Any]], dict[str, Any]], selector: Any,
          clock: Callable[[], float]) -> WebService:
    return WebService(cfg.web.listen, cfg.web.token, handler, selector, clock)
