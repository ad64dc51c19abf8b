"""Services: pull-style listeners (a socket, request -> reply) that answer from read-only
engine queries and the command handlers they are given, never from the daemon's fields.

Each kind registers in SERVICES: its name, whether a config enables it, and how to build it on
the loop's selector. The daemon starts every enabled one after the engine exists, asks each for
its next deadline (idle clients) and closes them at stop. The control socket is the first; the
policy service and the metrics listener are next."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from logwatch.protocols import Service
from logwatch.registry import Registry

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ServiceEntry:
    """One kind of service: enabled(cfg), build(cfg, handler, selector, clock, **inputs) ->
    Service, its address(cfg), and the config key an admin fixes when it cannot start (in the
    error). inputs: names of the daemon's other collaborators it needs (start_services'
    inputs mapping), passed to build as keyword arguments."""

    name: str
    enabled: Callable[[Any], bool]
    build: Callable[..., Service]
    address: Callable[[Any], str]
    address_key: str
    inputs: tuple[str, ...] = ()


SERVICES: Registry[ServiceEntry] = Registry("service")


def _build_control(cfg: Any, handler: Handler, selector: Any,
                   clock: Callable[[], float]) -> Service:
    from logwatch.services.control import ControlServer

    return ControlServer(cfg.daemon.socket, handler, selector, clock=clock)


SERVICES.register("control", ServiceEntry("control", lambda cfg: True, _build_control,
                                          lambda cfg: cfg.daemon.socket,
                                          "daemon.socket (--socket)"))


def _build_policy(cfg: Any, handler: Handler, selector: Any, clock: Callable[[], float], *,
                  policy: Any) -> Service:
    from logwatch.services.policy import PolicyServer

    p = cfg.policy
    return PolicyServer(p.listen, policy.answer, selector, clock, idle_timeout=p.idle_timeout,
                        on_error=p.on_error, mode=int(p.socket_mode, 8), owner=p.socket_owner,
                        group=p.socket_group)


SERVICES.register("policy", ServiceEntry(
    "policy", lambda cfg: bool(cfg.policy.listen), _build_policy,
    lambda cfg: cfg.policy.listen.removeprefix("unix:") if cfg.policy.listen.startswith("unix:")
    else "", "policy.listen (--policy-listen)", inputs=("policy",)))


def _build_web(cfg: Any, handler: Handler, selector: Any, clock: Callable[[], float]) -> Service:
    from logwatch.services.web import build

    return build(cfg, handler, selector, clock)


SERVICES.register("web", ServiceEntry("web", lambda cfg: cfg.web.listen is not None, _build_web,
                                      lambda cfg: cfg.web.listen, "web.listen (--web-listen)"))


class ServiceError(Exception):
    """A service cannot start; the message names the service and the key to fix."""


def start_services(cfg: Any, handler: Handler, selector: Any, clock: Callable[[], float],
                   inputs: Mapping[str, Any] | None = None) -> list[Service]:
    """Build and start every enabled service, each answering with handler(request) (and
    given the inputs it names)."""
    from logwatch.daemon.hints import access_hint

    started: list[Service] = []
    for entry in SERVICES:
        if not entry.enabled(cfg):
            continue
        extra = {name: (inputs or {})[name] for name in entry.inputs}
        service = entry.build(cfg, handler, selector, clock, **extra)
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
