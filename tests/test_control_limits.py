"""Control socket slots: idle clients are closed, so 64 idle connections cannot lock out
logwatchctl for good (issue 12.18)."""

from __future__ import annotations

import selectors
import socket
import time

import pytest
from controlloop import ServedControl
from daemon_harness import DaemonProc

from logwatch.services.control import IDLE_TIMEOUT, MAX_CLIENTS, ControlServer, request


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)           # blocking: waits while the listen backlog is full
    s.settimeout(30)
    return s


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def loop(tmp_path):
    lp = ServedControl(str(tmp_path / "ctl.sock"), lambda req: {"ok": True}, idle_timeout=0.5)
    try:
        yield lp
    finally:
        lp.close()


def test_idle_clients_are_closed_and_busy_ones_are_not(loop):
    path = loop.server.path
    idle = [connect(path) for _ in range(MAX_CLIENTS)]
    try:
        busy = idle.pop()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:       # keeps asking: never idle for 0.5 s
            busy.sendall(b'{"cmd": "status"}\n')
            assert busy.recv(100).startswith(b'{"ok":true')
            time.sleep(0.1)
        assert all(closed_by_peer(s, 5) for s in idle)
        assert len(loop.server.clients) == 1
        busy.sendall(b'{"cmd": "status"}\n')
        assert busy.recv(100).startswith(b'{"ok":true')
    finally:
        for s in [*idle, busy]:
            s.close()


def test_a_full_table_of_idle_clients_makes_room(loop):
    path = loop.server.path
    loop.stop.set()            # no timer runs: only the check made at accept() frees slots
    loop.thread.join(5)
    held = []
    try:
        for _ in range(MAX_CLIENTS):
            held.append(connect(path))
            loop.server._accept(0)
        assert len(loop.server.clients) == MAX_CLIENTS
        time.sleep(0.6)
        late = connect(path)
        loop.server._accept(0)
        assert len(loop.server.clients) == 1
        late.close()
    finally:
        for s in held:
            s.close()


def test_idle_connections_do_not_lock_out_logwatchctl(tmp_path):
    """A real daemon: 64 idle connections take every slot; they are closed after the idle
    timeout and logwatchctl is served again."""
    d = DaemonProc(tmp_path).start()
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CLIENTS):
            held.append(connect(d.socket))
        time.sleep(0.3)                      # let the daemon accept them all
        with pytest.raises(OSError):
            request(d.socket, {"cmd": "status"}, timeout=5)
        started = time.monotonic()
        assert all(closed_by_peer(s, IDLE_TIMEOUT + 10) for s in held)
        assert time.monotonic() - started < IDLE_TIMEOUT + 10
        proc = d.ctl("status")
        assert proc.returncode == 0, proc.stderr
        assert "action=control-idle-close clients=" in d.stderr()
    finally:
        for s in held:
            s.close()
        d.stop()


def test_a_request_waiting_after_a_busy_spell_is_not_idleness(tmp_path):
    """The loop was busy (a long reload) longer than the idle timeout while a client's
    request sat unread in the socket: that client is served, not dropped."""
    sel = selectors.DefaultSelector()
    server = ControlServer(str(tmp_path / "ctl.sock"), lambda req: {"ok": True}, sel,
                           idle_timeout=0.2)
    server.start()
    try:
        client = connect(server.path)
        server._accept(0)
        client.sendall(b'{"cmd": "status"}\n')
        time.sleep(0.4)                         # the loop did not look at it meanwhile
        assert server.expire_idle() == 0
        for key, mask in sel.select(1):
            key.data(mask)
        assert client.recv(100).startswith(b'{"ok":true')
        time.sleep(0.4)                         # now truly idle
        assert server.expire_idle() == 1
        client.close()
    finally:
        server.close()
        sel.close()
