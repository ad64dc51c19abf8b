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
import time
from collections.abc import Callable
from typing import Any

from logwatch.services.sockserver import Conn, SockServer, Timeouts, bind_unix

log = logging.getLogger("logwatchd.control")

MAX_REQUEST = 64 * 1024     # a request is a short command; longer lines are refused
MAX_CLIENTS = 64
IDLE_TIMEOUT = 10.0         # a client that neither sends nor reads for this long is dropped
MAX_OUTPUT = 1 << 20        # stop reading from a client that does not read its answers

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """The control socket cannot be set up."""


class ControlServer(SockServer):
    """Accepts clients on a Unix socket and answers each request line with handler(request)."""

    name = "control"
    max_output = MAX_OUTPUT
    peek_when_idle = True

    def __init__(self, path: str, handler: Handler, selector: selectors.BaseSelector,
                 clock: Callable[[], float] = time.monotonic,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        # Any progress (connect, request bytes, answer bytes sent) restarts the idle timeout.
        super().__init__(selector, clock, Timeouts(idle_timeout, idle_timeout, idle_timeout), log)
        self.path = path
        self.handler = handler

    @property
    def max_clients(self) -> int:
        return MAX_CLIENTS

    def on_idle_closed(self, count: int) -> None:
        log.info("action=control-idle-close clients=%d", count)

    def start(self) -> None:
        """Bind the socket (mode 0600 from the start: umask around bind) and start listening."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise ControlError(f"cannot create {directory}: {exc}") from exc
        sock = bind_unix(self.path, ControlError, "logwatchd")
        self.unix_path = self.path
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self.serve(sock)

    def on_data(self, client: Conn) -> None:
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
