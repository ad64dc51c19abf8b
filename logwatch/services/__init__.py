"""Services: pull-style listeners (a socket, request -> reply) that answer from read-only
engine queries and the command handlers they are given, never from the daemon's fields.

Each kind registers in SERVICES: its name, whether a config enables it, and how to build it on
the loop's selector. The daemon starts every enabled one after the engine exists, asks each for
its next deadline (idle clients) and closes them at stop. The control socket is the first; the
policy service and the metrics listener are next."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logwatch.protocols import Service
from logwatch.registry import Registry

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ServiceEntry:
    """One kind of service: enabled(cfg), build(cfg, handler, selector, clock) -> Service, its
    address(cfg), and the config key an admin fixes when it cannot start (in the error)."""

    name: str
    enabled: Callable[[Any], bool]
    build: Callable[[Any, Handler, Any, Callable[[], float]], Service]
    address: Callable[[Any], str]
    address_key: str


SERVICES: Registry[ServiceEntry] = Registry("service")


def _build_control(cfg: Any, handler: Handler, selector: Any,
                   clock: Callable[[], float]) -> Service:
    from logwatch.services.control import ControlServer

    return ControlServer(cfg.daemon.socket, handler, selector, clock=clock)


SERVICES.register("control", ServiceEntry("control", lambda cfg: True, _build_control,
                                          lambda cfg: cfg.daemon.socket,
                                          "daemon.socket (--socket)"))


def _build_web(cfg: Any, handler: Handler, selector: Any, clock: Callable[[], float]) -> Service:
    from logwatch.services.web import build

    return build(cfg, handler, selector, clock)


SERVICES.register("web", ServiceEntry("web", lambda cfg: cfg.web.listen is not None, _build_web,
                                      lambda cfg: cfg.web.listen, "web.listen (--web-listen)"))


class ServiceError(Exception):
    """A service cannot start; the message names the service and the key to fix."""


def start_services(cfg: Any, handler: Handler, selector: Any,
                   clock: Callable[[], float]) -> list[Service]:
    """Build and start every enabled service, each answering with handler(request)."""
    from logwatch.daemon.hints import access_hint

    started: list[Service] = []
    for entry in SERVICES:
        if not entry.enabled(cfg):
            continue
        service = entry.build(cfg, handler, selector, clock)
        try:
            service.start()
        except Exception as exc:    # ControlError (bind, mkdir): say which key to fix
            for done in started:
                done.close()
            address = entry.address(cfg)
            hint = access_hint(os.path.dirname(address), entry.address_key) \
                if address.startswith("/") else f" (check {entry.address_key})"
            raise ServiceError(f"{entry.name} socket: {exc}{hint}") from exc
        started.append(service)
    return started


__all__ = ["SERVICES", "Handler", "Service", "ServiceEntry", "ServiceError", "start_services"]
