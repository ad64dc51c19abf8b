"""Control socket: line-delimited JSON over a Unix socket (mode 0600), served from the daemon loop.

Request: one JSON object per line, e.g. {"cmd": "ban", "ip": "192.0.2.7", "for": 600}.
Response: one JSON object per line, {"ok": true, ...} or {"ok": false, "error": "..."}.
JSON only: a socket that unpickled would hand code execution to whoever reaches it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("logwatchd.control")

MAX_REQUEST = 64 * 1024     # a request is a short command; longer lines are refused
MAX_CLIENTS = 64
IDLE_TIMEOUT = 10.0         # a client that neither sends nor reads for this long is dropped
MAX_OUTPUT = 1 << 20        # stop reading from a client that does not read its answers

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """The control socket cannot be set up."""


@dataclass
class _Client:
    sock: socket.socket
    last: float = 0.0           # last progress (connect, request bytes, answer bytes sent)
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closing: bool = False


class ControlServer:
    """Accepts clients on a Unix socket and answers each request line with handler(request)."""

    name = "control"

    def __init__(self, path: str, handler: Handler, selector: selectors.BaseSelector,
                 clock: Callable[[], float] = time.monotonic,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.path = path
        self.handler = handler
        self.selector = selector
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.sock: socket.socket | None = None
        self.clients: dict[int, _Client] = {}

    def start(self) -> None:
        """Bind the socket (mode 0600 from the start: umask around bind) and start listening."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ControlError(f"cannot create {directory}: {exc}") from exc
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot bind {self.path}: {exc}") from exc
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ControlError(f"{self.path}: {exc}") from exc
        if not stat.S_ISSOCK(st.st_mode):
            # A wrong daemon.socket must not make us delete someone's file.
            raise ControlError(f"{self.path} exists and is not a socket: refusing to remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)   # nobody listens: a leftover of a crashed daemon
            return
        finally:
            probe.close()
        raise ControlError(f"{self.path}: another logwatchd is already listening there")

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _accept(self, mask: int) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.expire_idle()          # idle clients must not keep a new one out
        if len(self.clients) >= MAX_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        client = _Client(conn, last=self.clock())
        self.clients[conn.fileno()] = client
        self.selector.register(conn, selectors.EVENT_READ, lambda m, c=client: self._io(c, m))

    def next_deadline(self) -> float | None:
        """When the longest-idle client times out (the daemon's "control" timer), or None."""
        if not self.clients:
            return None
        return min(c.last for c in self.clients.values()) + self.idle_timeout

    def expire_idle(self, now: float | None = None) -> int:
        """Drop the clients idle for idle_timeout or longer; return how many."""
        now = self.clock() if now is None else now
        idle = [fd for fd, c in self.clients.items()
                if now - c.last >= self.idle_timeout and not self._input_waiting(c, now)]
        for fd in idle:
            self._drop(fd)
        if idle:
            log.info("action=control-idle-close clients=%d", len(idle))
        return len(idle)

    @staticmethod
    def _input_waiting(client: _Client, now: float) -> bool:
        """A request that arrived while the loop was busy (a long reload) is not idleness."""
        try:
            waiting = bool(client.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        if waiting:
            client.last = now
        return waiting

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
                if sent:
                    client.last = self.clock()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(fd)
                return
            if client.inbuf and len(client.outbuf) <= MAX_OUTPUT:
                self._answer(client)     # requests held back while the output was full
        if client.closing and not client.outbuf:
            self._drop(fd)
            return
        want = selectors.EVENT_WRITE if client.outbuf else 0
        if not client.closing and len(client.outbuf) <= MAX_OUTPUT:
            want |= selectors.EVENT_READ
        if want:
            self.selector.modify(client.sock, want, self.selector.get_key(client.sock).data)

    def _answer(self, client: _Client) -> None:
        while len(client.outbuf) <= MAX_OUTPUT:
            nl = client.inbuf.find(b"\n")
            if nl < 0:
                if len(client.inbuf) > MAX_REQUEST:
                    client.outbuf += _encode({"ok": False, "error": "request too long"})
                    client.inbuf.clear()
                    client.closing = True
                return
            line = bytes(client.inbuf[:nl])
            del client.inbuf[: nl + 1]
            if line.strip():
                client.outbuf += _encode(self.dispatch(line))

    def dispatch(self, line: bytes) -> dict[str, Any]:
        """Decode one request line and run the handler; every failure becomes {"ok": false}."""
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: "[[[[..." nests deeper than the interpreter's stack allows.
            return {"ok": False, "error": f"invalid JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        try:
            response = self.handler(request)
        except Exception as exc:  # a bug in one command must not kill the daemon
            log.exception("action=control-error cmd=%s", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {exc}"}
        return response


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


# -- client side (logwatchctl) -------------------------------------------------------

class Unavailable(ConnectionError):
    """The daemon cannot be reached; `reason` is "not-running" or "permission"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request and return the decoded response; raise Unavailable or OSError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise Unavailable("not-running", f"{path} does not exist: is logwatchd running?") from None
        except ConnectionRefusedError:
            raise Unavailable("not-running",
                              f"nothing listens on {path}: logwatchd is not running") from None
        except PermissionError:
            raise Unavailable("permission",
                              f"permission denied on {path} (the control socket is root-only)") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.ENOTDIR):
                raise Unavailable("not-running", f"{path} is not a socket") from None
            raise
        buf = bytearray()
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            while b"\n" not in buf:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        except (BrokenPipeError, ConnectionResetError):
            # Not a BrokenPipeError for the caller: logwatchctl takes that for its stdout.
            raise OSError(f"{path}: the daemon closed the connection without an answer "
                          f"(too many clients?)") from None
    finally:
        sock.close()
    line, _, _ = bytes(buf).partition(b"\n")
    if not line:
        raise OSError(f"{path}: the daemon closed the connection without an answer")
    response = json.loads(line)
    if not isinstance(response, dict):
        raise OSError(f"{path}: unexpected answer {line[:200]!r}")
    return response
