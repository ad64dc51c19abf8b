"""The Postfix policy service (SMTPD_POLICY_README): `name=value` lines ended by an empty line
in, `action=...` and an empty line out, on persistent connections from every smtpd.

Served from the daemon's selector loop with non-blocking sockets, like the control socket:
many connections, pipelined requests answered in order, a request over 64 KB or a
connection idle past policy.idle_timeout closed. A malformed request is logged and answered
DUNNO; an internal error answers policy.on_error. The verdict itself never waits on I/O.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from logwatch.engine.policy.request import (
    MalformedRequest,
    PolicyRequest,
    parse_request,
    split_requests,
)
from logwatch.services.sockserver import Conn, SockServer, Timeouts, bind_unix

log = logging.getLogger("logwatchd.policy")

MAX_CLIENTS = 1024            # Postfix's default smtpd process limit is 100
MAX_OUTPUT = 1 << 20          # stop reading from a client that does not read its answers
ERROR_LOG_EVERY = 10.0        # malformed-request log lines: at most one per this many seconds

Answer = Callable[[PolicyRequest], str]


class PolicyError(Exception):
    """The policy socket cannot be set up."""


@dataclass
class PolicyStats:
    requests: int = 0
    malformed: int = 0
    errors: int = 0
    too_long: int = 0
    idle_closed: int = 0
    connections: int = 0


class _Urgent:
    """A selector callback the daemon's loop runs before the others ready at the same time
    (loop.py: the `urgent` attribute): smtpd processes wait on these sockets."""

    __slots__ = ("fn",)
    urgent = True

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn

    def __call__(self, mask: int) -> None:
        self.fn(mask)


def _reply(action: str) -> bytes:
    return f"action={action}\n\n".encode("ascii", "replace")


class PolicyServer(SockServer):
    """Accepts smtpd connections on listen ("unix:/path" or "inet:host:port")."""

    name = "policy"
    accept_burst = 64             # a burst of smtpd processes connecting at once
    max_output = MAX_OUTPUT

    def __init__(self, listen: str, answer: Answer, selector: selectors.BaseSelector,
                 clock: Callable[[], float] = time.monotonic, *, idle_timeout: float = 600.0,
                 on_error: str = "DUNNO", mode: int = 0o666, owner: str | None = None,
                 group: str | None = None) -> None:
        # Only a request restarts the idle timeout (answers are small and read at once).
        super().__init__(selector, clock, Timeouts(idle_timeout, idle_timeout, None), log)
        self.listen = listen
        self.answer = answer
        self.error_reply = _reply(on_error)
        self.mode, self.owner, self.group = mode, owner, group
        self.stats = PolicyStats()
        self._last_error_log = -ERROR_LOG_EVERY
        self.path = listen[5:] if listen.startswith("unix:") else None

    # -- set-up ----------------------------------------------------------------------

    def start(self) -> None:
        sock = self._bind_unix() if self.path is not None else self._bind_inet()
        sock.listen(128)
        self.serve(sock)
        log.info("action=policy-listen address=%s", self.listen)

    def _bind_inet(self) -> socket.socket:
        host, _, port = self.listen[5:].rpartition(":")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                       flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise PolicyError(f"{self.listen}: {host!r} is not an IP address: {exc}") from exc
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise PolicyError(f"cannot bind {self.listen}: {exc}") from exc
        return sock

    def _bind_unix(self) -> socket.socket:
        assert self.path is not None
        sock = bind_unix(self.path, PolicyError, "process")
        self.unix_path = self.path
        try:
            uid = pwd.getpwnam(self.owner).pw_uid if self.owner else -1
            gid = grp.getgrnam(self.group).gr_gid if self.group else -1
            if uid != -1 or gid != -1:
                os.chown(self.path, uid, gid)
            os.chmod(self.path, self.mode)
        except (KeyError, OSError) as exc:
            sock.close()
            os.unlink(self.path)
            raise PolicyError(f"{self.path}: cannot set owner/mode: {exc}") from exc
        return sock

    # -- connections (the loop is SockServer's) --------------------------------------

    @property
    def max_clients(self) -> int:
        return MAX_CLIENTS

    def callback(self, fn: Callable[[int], None]) -> Callable[[int], None]:
        return _Urgent(fn)

    def on_accepted(self, conn: Conn) -> None:
        self.stats.connections += 1

    def on_idle_closed(self, count: int) -> None:
        self.stats.idle_closed += count
        log.info("action=policy-idle-close clients=%d", count)

    def on_data(self, client: Conn) -> None:
        if len(client.outbuf) > MAX_OUTPUT:
            return
        blocks, too_long = split_requests(client.inbuf)
        for block in blocks:
            client.outbuf += self.reply(block)
        if too_long:
            # Nothing Postfix sends comes near 64 KB: this is no smtpd, or a broken one.
            self.stats.too_long += 1
            self._log_error("request-too-long", "over 64 KB")
            client.inbuf.clear()
            client.closing = True

    def reply(self, block: bytes) -> bytes:
        """The reply to one request block: its action, DUNNO if malformed, on_error on a bug."""
        self.stats.requests += 1
        try:
            req = parse_request(block)
        except MalformedRequest as exc:
            self.stats.malformed += 1
            self._log_error("malformed-request", str(exc))
            return b"action=DUNNO\n\n"
        try:
            return _reply(self.answer(req))
        except Exception:                     # fail open: never take mail down with us
            self.stats.errors += 1
            log.exception("action=policy-error")
            return self.error_reply

    def _log_error(self, what: str, detail: str) -> None:
        now = self.clock()
        if now - self._last_error_log >= ERROR_LOG_EVERY:
            self._last_error_log = now
            log.error("action=policy-%s error=%r (counted in status; logged once per %gs)",
                      what, detail, ERROR_LOG_EVERY)
