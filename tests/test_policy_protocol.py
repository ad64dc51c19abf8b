"""The policy protocol and server (services/policy.py) on real sockets served by a selector:
pipelining, malformed and huge requests, one `action=` reply per request, idle timeout."""

from __future__ import annotations

import selectors
import socket
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatch.engine.policy import PolicyRequest
from logwatch.engine.policy.request import MAX_REQUEST, split_requests
from logwatch.services.policy import PolicyServer


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(req: PolicyRequest) -> str:
    if req.get("boom"):
        raise RuntimeError("a bug")
    return "REJECT 5.7.1 no" if req.client_address == "192.0.2.66" else "DUNNO"


def server(**kw) -> tuple[PolicyServer, selectors.DefaultSelector]:
    sel = selectors.DefaultSelector()
    return PolicyServer("inet:127.0.0.1:0", answer, sel, Clock(), **kw), sel


def pump(sel: selectors.BaseSelector, rounds: int = 50) -> None:
    for _ in range(rounds):
        events = sel.select(0.01)
        if not events:
            return
        for key, mask in events:
            key.data(mask)


def served_pair(srv: PolicyServer, sel: selectors.BaseSelector) -> socket.socket:
    """A client socket connected to srv through its real accept path (an AF_UNIX pair)."""
    a, b = socket.socketpair()
    srv.sock = _Listener(b)                   # the server's own accept path takes b
    srv._accept(selectors.EVENT_READ)
    srv.sock = None
    a.settimeout(2)
    return a


class _Listener:
    """accept() hands out one connected socket, then would block."""

    def __init__(self, conn: socket.socket) -> None:
        self.conns = [conn]

    def accept(self) -> tuple[socket.socket, None]:
        if not self.conns:
            raise BlockingIOError
        return self.conns.pop(), None


def request(**attrs: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", **attrs}
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def read_replies(sock: socket.socket, sel: selectors.BaseSelector, n: int) -> list[bytes]:
    buf = b""
    for _ in range(200):
        pump(sel)
        sock.setblocking(False)
        try:
            buf += sock.recv(1 << 20)
        except BlockingIOError:
            pass
        if buf.count(b"\n\n") >= n:
            break
    return buf.split(b"\n\n")[:-1]


def test_pipelined_requests_answered_in_order() -> None:
    srv, sel = server()
    sock = served_pair(srv, sel)
    body = (request(client_address="192.0.2.1") + request(client_address="192.0.2.66")
            + b"garbage\n\n" + request(boom="1") + request(client_address="::ffff:192.0.2.66"))
    for i in range(0, len(body), 7):                       # split anywhere
        sock.sendall(body[i:i + 7])
        pump(sel)
    replies = read_replies(sock, sel, 5)
    assert replies == [b"action=DUNNO", b"action=REJECT 5.7.1 no", b"action=DUNNO",
                       b"action=DUNNO", b"action=REJECT 5.7.1 no"]
    assert (srv.stats.malformed, srv.stats.errors) == (1, 1)


def test_on_error_answers_internal_errors() -> None:
    srv, sel = server(on_error="DEFER_IF_PERMIT 4.3.0 try later")
    sock = served_pair(srv, sel)
    sock.sendall(request(boom="1"))
    assert read_replies(sock, sel, 1) == [b"action=DEFER_IF_PERMIT 4.3.0 try later"]


def test_huge_request_closes_the_connection() -> None:
    srv, sel = server()
    sock = served_pair(srv, sel)
    sock.sendall(request(client_address="192.0.2.66"))
    try:
        sock.sendall(b"x=" + b"a" * (MAX_REQUEST + 10))
    except OSError:
        pass
    replies = read_replies(sock, sel, 1)
    assert replies == [b"action=REJECT 5.7.1 no"]
    pump(sel)
    assert not srv.clients and srv.stats.too_long == 1


def test_idle_connections_are_closed() -> None:
    srv, sel = server(idle_timeout=30)
    a, b = served_pair(srv, sel), served_pair(srv, sel)
    srv.clock.now += 20
    b.sendall(request())
    read_replies(b, sel, 1)
    assert srv.next_deadline() == 1030.0
    srv.clock.now += 15
    assert srv.expire_idle() == 1 and len(srv.clients) == 1
    a.close()
    b.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n\n", b"\n")),
    st.dictionaries(st.text(min_size=0, max_size=12), st.text(max_size=40), max_size=6).map(
        lambda d: "".join(f"{k}={v}\n" for k, v in d.items()).replace("\n\n", "\n").encode()),
), min_size=1, max_size=8))
def test_random_requests_one_reply_each(parts: list[bytes]) -> None:
    """Whatever the bytes, each request block gets exactly one action= reply, never a crash,
    and a reply is only ever an action this server chose."""
    srv, sel = server()
    blocks = [p.strip(b"\n") + b"\n\n" for p in parts]
    wire = b"".join(blocks)
    expected = split_requests(bytearray(wire))[0]
    sock = served_pair(srv, sel)
    sock.sendall(wire)
    replies = read_replies(sock, sel, len(expected))
    assert len(replies) == len(expected)
    assert set(replies) <= {b"action=DUNNO", b"action=REJECT 5.7.1 no"}
    sock.close()
    srv.close()


def test_unix_socket_mode(tmp_path: Path) -> None:
    sel = selectors.DefaultSelector()
    path = tmp_path / "policy.sock"
    srv = PolicyServer(f"unix:{path}", answer, sel, Clock(), mode=0o660)
    srv.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o660
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        pump(sel)
        s.sendall(request(client_address="192.0.2.66"))
        s.settimeout(2)
        assert read_replies(s, sel, 1) == [b"action=REJECT 5.7.1 no"]
        s.close()
    finally:
        srv.close()
    assert not path.exists()
