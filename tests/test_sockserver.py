"""The shared connection core (services/sockserver.py) with a toy line-echo protocol over real
socket pairs: pipelined input after a half-close, backpressure, deadlines, a failing hook."""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Iterator

import pytest

from logwatch.services.sockserver import Conn, SockServer, Timeouts


class Echo(SockServer):
    """Answers each line with itself upper-cased; "boom" raises in the hook."""

    name = "echo"
    max_output = 64

    def __init__(self, selector: selectors.BaseSelector, clock) -> None:
        super().__init__(selector, clock, Timeouts(5.0, 5.0, None), logging.getLogger("t"))
        self.idle_closed = 0

    def on_data(self, conn: Conn) -> None:
        while len(conn.outbuf) <= self.max_output and b"\n" in conn.inbuf:
            line, _, rest = bytes(conn.inbuf).partition(b"\n")
            conn.inbuf[:] = rest
            if line == b"boom":
                raise RuntimeError("a bug in the protocol")
            conn.outbuf += line.upper() + b"\n"

    def on_idle_closed(self, count: int) -> None:
        self.idle_closed += count


class Listener:
    def __init__(self, conn: socket.socket) -> None:
        self.conn: socket.socket | None = conn

    def accept(self) -> tuple[socket.socket, None]:
        if self.conn is None:
            raise BlockingIOError
        conn, self.conn = self.conn, None
        return conn, None


class Rig:
    def __init__(self) -> None:
        self.now = 100.0
        self.sel = selectors.DefaultSelector()
        self.srv = Echo(self.sel, lambda: self.now)

    def connect(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        self.srv.sock = Listener(theirs)          # type: ignore[assignment]
        self.srv._accept(selectors.EVENT_READ)
        self.srv.sock = None
        ours.settimeout(2)
        return ours

    def pump(self) -> None:
        for _ in range(50):
            events = self.sel.select(0.01)
            if not events:
                return
            for key, mask in events:
                key.data(mask)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.srv.close()
        r.sel.close()


def read_until_eof(sock: socket.socket, rig: Rig) -> bytes:
    out = b""
    for _ in range(200):
        rig.pump()
        try:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"no EOF after {out!r}")


def test_pipelined_lines_held_back_by_backpressure_are_answered_after_a_half_close(rig: Rig):
    c = rig.connect()
    lines = [f"line{i:03d}".encode() for i in range(40)]     # 320 bytes of answers > 64
    c.sendall(b"".join(x + b"\n" for x in lines))
    c.shutdown(socket.SHUT_WR)
    assert read_until_eof(c, rig) == b"".join(x.upper() + b"\n" for x in lines)
    assert rig.srv.clients == {}
    c.close()


def test_deadlines_follow_reads_not_writes(rig: Rig):
    c = rig.connect()
    assert rig.srv.next_deadline() == 105.0
    rig.now = 103.0
    c.sendall(b"a\n")
    rig.pump()
    assert c.recv(10) == b"A\n"
    assert rig.srv.next_deadline() == 108.0
    assert rig.srv.expire_idle(107.9) == 0
    assert rig.srv.expire_idle(108.0) == 1 and rig.srv.idle_closed == 1
    assert c.recv(10) == b""
    c.close()


def test_a_failing_hook_drops_that_client_only(rig: Rig, caplog):
    bad, good = rig.connect(), rig.connect()
    bad.sendall(b"boom\n")
    good.sendall(b"fine\n")
    with caplog.at_level(logging.ERROR):
        rig.pump()
    assert good.recv(10) == b"FINE\n"
    assert bad.recv(10) == b""
    assert len(rig.srv.clients) == 1
    assert "action=echo-error" in caplog.text
    bad.close()
    good.close()
