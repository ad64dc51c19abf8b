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
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from logwatch.engine.policy.request import (
    MalformedRequest,
    PolicyRequest,
    parse_request,
    split_requests,
)

log = logging.getLogger("logwatchd.policy")

MAX_CLIENTS = 1024            # Postfix's default smtpd process limit is 100
MAX_OUTPUT = 1 << 20          # stop reading from a client that does not read its answers
ERROR_LOG_EVERY = 10.0        # malformed-request log lines: at most one per this many seconds

Answer = Callable[[PolicyRequest], str]


class PolicyError(Exception):
    """The policy socket cannot be set up."""


@dataclass
class _Client:
    sock: socket.socket
    last: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closing: bool = False


@dataclass
class PolicyStats:
    requests: int = 0
    malformed: int = 0
    errors: int = 0
    too_long: int = 0
    idle_closed: int = 0
    connections: int = 0


def _reply(action: str) -> bytes:
    return f"action={action}\n\n".encode("ascii", "replace")


class PolicyServer:
    """Accepts smtpd connections on listen ("unix:/path" or "inet:host:port")."""

    name = "policy"

    def __init__(self, listen: str, answer: Answer, selector: selectors.BaseSelector,
                 clock: Callable[[], float] = time.monotonic, *, idle_timeout: float = 600.0,
                 on_error: str = "DUNNO", mode: int = 0o666, owner: str | None = None,
                 group: str | None = None) -> None:
        self.listen = listen
        self.answer = answer
        self.selector = selector
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.error_reply = _reply(on_error)
        self.mode, self.owner, self.group = mode, owner, group
        self.sock: socket.socket | None = None
        self.clients: dict[int, _Client] = {}
        self.stats = PolicyStats()
        self._last_error_log = -ERROR_LOG_EVERY
        self.path = listen[5:] if listen.startswith("unix:") else None

    # -- set-up ----------------------------------------------------------------------

    def start(self) -> None:
        sock = self._bind_unix() if self.path is not None else self._bind_inet()
        sock.listen(128)
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)
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
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)        # nobody connects before the mode and owner are set
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise PolicyError(f"cannot bind {self.path}: {exc}") from exc
        finally:
            os.umask(old)
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

    def _remove_stale(self) -> None:
        assert self.path is not None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PolicyError(f"{self.path}: {exc}") from exc
        if not stat.S_ISSOCK(st.st_mode):
            raise PolicyError(f"{self.path} exists and is not a socket: refusing to remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)      # a leftover of a crashed daemon
            return
        finally:
            probe.close()
        raise PolicyError(f"{self.path}: another process is already listening there")

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
            if self.path is not None:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass

    # -- connections -----------------------------------------------------------------

    def _accept(self, mask: int) -> None:
        assert self.sock is not None
        for _ in range(64):           # a burst of smtpd processes connecting at once
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:    # EMFILE: keep serving the others
                log.error("action=policy-accept-error error=%s", exc)
                return
            if len(self.clients) >= MAX_CLIENTS:
                self.expire_idle()
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(conn, last=self.clock())
            self.clients[conn.fileno()] = client
            self.stats.connections += 1
            self.selector.register(conn, selectors.EVENT_READ,
                                   lambda m, c=client: self._io(c, m))

    def next_deadline(self) -> float | None:
        if not self.clients:
            return None
        return min(c.last for c in self.clients.values()) + self.idle_timeout

    def expire_idle(self, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        idle = [fd for fd, c in self.clients.items() if now - c.last >= self.idle_timeout]
        for fd in idle:
            self._drop(fd)
        if idle:
            self.stats.idle_closed += len(idle)
            log.info("action=policy-idle-close clients=%d", len(idle))
        return len(idle)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is None:
            return
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def _io(self, client: _Client, mask: int) -> None:
        fd = client.sock.fileno()
        if mask & selectors.EVENT_READ and not client.closing:
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(fd)
                return
            if data == b"":
                client.closing = True
            elif data:
                client.last = self.clock()
                client.inbuf += data
                self._answer(client)
        if client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
                del client.outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(fd)
                return
            if client.inbuf and len(client.outbuf) <= MAX_OUTPUT and not client.closing:
                self._answer(client)
        if client.closing and not client.outbuf:
            self._drop(fd)
            return
        want = selectors.EVENT_WRITE if client.outbuf else 0
        if not client.closing and len(client.outbuf) <= MAX_OUTPUT:
            want |= selectors.EVENT_READ
        key = self.selector.get_key(client.sock)
        if want and want != key.events:
            self.selector.modify(client.sock, want, key.data)

    def _answer(self, client: _Client) -> None:
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
