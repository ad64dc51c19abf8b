"""A small HTTP/1.1 server on the daemon's selector: non-blocking, one request per connection
(Connection: close), every request capped in size and in time.

Why our own and not http.server: that one blocks a thread per client, and the daemon has one
loop that also reads the logs. Here a client only ever costs a recv() or a send() of what is
ready; a client that sends its request slowly (slowloris) or never reads its answer is dropped
at its deadline, checked on the daemon's "control" timer (next_deadline/expire_idle)."""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from logwatch.services.sockserver import Conn, SockServer, Timeouts

log = logging.getLogger("logwatchd.web")

MAX_HEAD = 8192              # request line and headers
MAX_BODY = 16384             # a login or an action form
REQUEST_TIMEOUT = 5.0        # the whole request must arrive within this
WRITE_TIMEOUT = 10.0         # and the answer be read within this (from the last progress)
MAX_CLIENTS = 64
MAX_HEADERS = 64

REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}

# Sent with every answer: the page loads only its own assets, cannot be framed, sends no referrer.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]          # lower-case names; a repeated header: the last one
    body: bytes = b""
    peer: str = ""

    def form(self) -> dict[str, str]:
        """The url-encoded body of a POST (first value of each field)."""
        try:
            text = self.body.decode("utf-8")
            return {k: v[0] for k, v in parse_qs(text, max_num_fields=32).items()}
        except ValueError:          # not UTF-8, or more fields than any of our forms has
            return {}

    def cookies(self) -> dict[str, str]:
        out = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                out[name] = value
        return out


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS),
                 *(f"{k}: {v}" for k, v in self.headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


App = Callable[[Request], Response]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """(method, path, query, headers) of a request head; BadRequest if malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:                      # pragma: no cover (latin-1 takes all)
        raise BadRequest(400, "undecodable") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "bad request line")
    method, target, _ = parts
    if not method.isalpha() or not target.startswith("/"):
        raise BadRequest(400, "bad request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    try:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query, max_num_fields=32).items()}
    except ValueError as exc:       # too many fields, a bad IPv6 literal in a netloc...
        raise BadRequest(400, "bad request target") from exc
    return method, unquote(url.path), query, headers


class HttpServer(SockServer):
    """Accepts on a TCP address and answers each connection's one request with app(request)."""

    name = "web"
    accept_burst = 16             # a burst of connects, bounded so the logs wait little
    accept_error_level = logging.WARNING

    def __init__(self, host: str, port: int, app: App, selector: selectors.BaseSelector,
                 clock: Callable[[], float]) -> None:
        # The request must arrive within REQUEST_TIMEOUT of the connect (request bytes do not
        # extend it: slowloris); each answer chunk sent gives WRITE_TIMEOUT more.
        super().__init__(selector, clock, Timeouts(REQUEST_TIMEOUT, None, WRITE_TIMEOUT), log)
        self.host, self.port, self.app = host, port, app

    @property
    def max_clients(self) -> int:
        return MAX_CLIENTS

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]       # port 0 (tests): the one the kernel chose
        self.serve(sock)

    def on_data(self, client: Conn) -> None:
        end = client.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(client.inbuf) > MAX_HEAD:
                self._reply(client, Response(431, b"request head too large\n", "text/plain"))
            return
        if end > MAX_HEAD:
            self._reply(client, Response(431, b"request head too large\n", "text/plain"))
            return
        try:
            method, path, query, headers = parse_head(bytes(client.inbuf[:end]))
            length = _content_length(headers)
        except BadRequest as exc:
            self._reply(client, Response(exc.status, f"{exc}\n".encode(), "text/plain"))
            return
        body = bytes(client.inbuf[end + 4:end + 4 + length])
        if len(body) < length:
            return                   # the rest of the body is still on its way
        request = Request(method, path, query, headers, body, client.peer)
        try:
            response = self.app(request)
        except Exception:            # a bug in one page must not kill the daemon
            log.exception("action=web-error path=%s", path[:200])
            response = Response(500, b"internal error\n", "text/plain")
        self._reply(client, response, head_only=method == "HEAD")

    def _reply(self, client: Conn, response: Response, head_only: bool = False) -> None:
        client.closing = True        # one request per connection: read no more
        client.inbuf.clear()
        client.outbuf += response.encode(head_only)
        client.deadline = self.clock() + WRITE_TIMEOUT


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked requests are not supported")
    raw = headers.get("content-length", "0")
    if not raw.isdigit():
        raise BadRequest(400, "bad Content-Length")
    if int(raw) > MAX_BODY:
        raise BadRequest(413, "request body too large")
    return int(raw)
