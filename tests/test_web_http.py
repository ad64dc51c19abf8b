"""The web listener's HTTP server (logwatch/web/http.py) on a real selector and real sockets:
request parsing, the size and time caps, slow and silent clients, HEAD, the security headers."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator

import pytest

from logwatch.web import http
from logwatch.web.http import BadRequest, HttpServer, Request, Response, parse_head


class Served:
    """An HttpServer on 127.0.0.1:0 whose selector a thread turns, with a fake clock."""

    def __init__(self, app: http.App) -> None:
        self.now = 1000.0
        self.selector = selectors.DefaultSelector()
        self.server = HttpServer("127.0.0.1", 0, app, self.selector, lambda: self.now)
        self.server.start()
        self.stop = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            for key, mask in self.selector.select(0.02):
                with self.lock:
                    key.data(mask)

    def expire(self, now: float) -> int:
        with self.lock:
            self.now = now
            return self.server.expire_idle(now)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        return s

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.server.close()
        self.selector.close()


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.fixture
def served() -> Iterator[Served]:
    seen: list[Request] = []

    def app(req: Request) -> Response:
        seen.append(req)
        if req.path == "/boom":
            raise RuntimeError("bug")
        return Response(200, f"{req.method} {req.path} {req.query} {req.body!r}".encode(),
                        "text/plain")

    s = Served(app)
    s.seen = seen  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.close()


def test_parse_head_reads_the_request_line_query_and_headers() -> None:
    method, path, query, headers = parse_head(
        b"GET /a%20b?q=1.2.3&x=%3Cs%3E HTTP/1.1\r\nHost: x\r\nCookie: a=b")
    assert (method, path, query) == ("GET", "/a b", {"q": "1.2.3", "x": "<s>"})
    assert headers == {"host": "x", "cookie": "a=b"}
    for bad in (b"GET / HTTP/1.1 extra", b"GET nothing HTTP/1.1", b"G?T / HTTP/1.1",
                b"GET / SPDY/3", b"GET / HTTP/1.1\r\nno colon", b"GET / HTTP/1.1\r\n x: y"):
        with pytest.raises(BadRequest):
            parse_head(bad)


def test_one_request_one_answer_with_the_security_headers(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = read_all(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Security-Policy: default-src 'self'" in head
    assert b"X-Content-Type-Options: nosniff" in head and b"Connection: close" in head
    assert body == b"GET /x {'a': '1'} b''"


def test_a_post_body_arriving_in_pieces_is_read_whole(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"POST /f HTTP/1.1\r\nContent-Length: 7\r\n\r\nab")
        s.sendall(b"c=def")
        assert read_all(s).endswith(b"POST /f {} b'abc=def'")


def test_head_gets_the_headers_only(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"HEAD / HTTP/1.1\r\n\r\n")
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (http.MAX_HEAD + 10), b"431"),
    (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (http.MAX_BODY + 1), b"413"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),    # TLS on plain HTTP
    (b"GET /?" + b"&".join(b"a%d=1" % i for i in range(40)) + b" HTTP/1.1\r\n\r\n", b"400"),
    (b"GET //[x/ HTTP/1.1\r\n\r\n", b"400"),                          # urlsplit refuses it
])
def test_oversized_or_malformed_requests_are_refused(served: Served, request_bytes: bytes,
                                                     status: bytes) -> None:
    with served.connect() as s:
        s.sendall(request_bytes)
        assert read_all(s).startswith(b"HTTP/1.1 " + status)
    assert served.seen == []        # type: ignore[attr-defined]


def test_a_form_with_too_many_fields_reads_as_empty() -> None:
    body = "&".join(f"f{i}=1" for i in range(40)).encode()
    assert Request("POST", "/", {}, {}, body).form() == {}
    assert Request("POST", "/", {}, {}, b"\xff=1").form() == {}


def test_a_bug_in_the_app_is_a_500_and_the_server_goes_on(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /boom HTTP/1.1\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 500")
    with served.connect() as s:
        s.sendall(b"GET /ok HTTP/1.1\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200")


def test_slow_and_silent_clients_are_dropped_at_their_deadline(served: Served) -> None:
    """Slowloris: a head that never ends holds its slot only until REQUEST_TIMEOUT."""
    slow = served.connect()
    slow.sendall(b"GET / HTTP/1.1\r\nX-a: b\r\n")
    silent = served.connect()
    deadline = served.now + http.REQUEST_TIMEOUT
    for _ in range(100):             # both accepted by the serving thread
        with served.lock:
            if len(served.server.clients) == 2:
                break
        threading.Event().wait(0.01)
    with served.lock:
        assert served.server.next_deadline() == deadline
    assert served.expire(deadline - 0.1) == 0
    assert served.expire(deadline) == 2
    slow.settimeout(5)
    assert slow.recv(100) == b""     # closed by the server
    silent.close()
    slow.close()
    with served.connect() as s:      # and others are still served
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 200")


def test_no_more_than_max_clients_at_once(served: Served, monkeypatch) -> None:
    monkeypatch.setattr(http, "MAX_CLIENTS", 3)
    held = [served.connect() for _ in range(3)]
    for _ in range(100):
        with served.lock:
            if len(served.server.clients) == 3:
                break
        threading.Event().wait(0.01)
    extra = served.connect()
    extra.settimeout(5)
    assert extra.recv(10) == b""     # refused: closed without an answer
    for s in (*held, extra):
        s.close()
