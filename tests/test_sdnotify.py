"""sd_notify over a real AF_UNIX datagram socket, as systemd's manager receives it."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatch.daemon import sdnotify

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in the file system; yields (socket, NOTIFY_SOCKET value)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(5)
        yield sock, path
    finally:
        sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in the abstract namespace; yields (socket, '@name')."""
    name = f"logwatchd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield sock, "@" + name
    finally:
        sock.close()


def test_notify_without_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


def test_notify_path_socket(receiver: tuple[socket.socket, str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1\nSTATUS=watching 2 files") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching 2 files"
    assert sdnotify.notify("WATCHDOG=1") is True
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_abstract_socket(abstract_receiver: tuple[socket.socket, str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    sock, name = abstract_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.notify("STOPPING=1") is True
    assert sock.recv(4096) == b"STOPPING=1"


def test_notify_dead_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.notify("READY=1") is False


def test_sender_credentials_name_the_main_process(receiver: tuple[socket.socket, str]) -> None:
    """NotifyAccess=main relies on the kernel-attached sender pid being the daemon's own pid."""
    sock, path = receiver
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    env = dict(os.environ, NOTIFY_SOCKET=path, PYTHONPATH=str(REPO))
    code = "import sys; from logwatch.daemon.sdnotify import notify; sys.exit(0 if notify('READY=1') else 3)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    finally:
        rc = proc.wait(timeout=30)
    assert rc == 0
    assert data == b"READY=1"
    creds = [d for level, kind, d in ancdata
             if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    assert creds, "no SCM_CREDENTIALS received"
    pid, _uid, _gid = struct.unpack("iII", creds[0][:12])
    assert pid == proc.pid


@pytest.mark.parametrize(("usec", "pid", "expected"), [
    (None, None, None),
    ("", None, None),
    ("60000000", None, 60.0),
    ("30000000", "SELF", 30.0),
    ("30000000", "OTHER", None),
    ("30000000", "garbage", None),
    ("0", None, None),
    ("-5", None, None),
    ("soon", None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            value = {"SELF": str(os.getpid()), "OTHER": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval() == expected


def _recv_from(sock: socket.socket, deadline: float) -> tuple[bytes, int | None]:
    """One datagram and the sender's pid (from SCM_CREDENTIALS); raises on timeout."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return data, struct.unpack("iII", payload[:12])[0]
    return data, None


def test_daemon_speaks_the_type_notify_protocol(receiver: tuple[socket.socket, str],
                                                tmp_path: Path) -> None:
    """logwatchd as the unit runs it: READY=1 and WATCHDOG=1 from the main pid, STOPPING=1."""
    sock, path = receiver
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    (tmp_path / "mail.log").write_text("")
    (tmp_path / "whitelist").write_text("192.0.2.1\n")
    config = tmp_path / "logwatchd.yaml"
    # Nothing outside tmp_path: no relay map, no firewall, no session watchdog.
    config.write_text(f"""sources:
  logfiles: [{tmp_path / "mail.log"}]
relay:
  enabled: false
bans:
  whitelist: {tmp_path / "whitelist"}
firewall:
  backend: none
watchdog:
  enabled: false
daemon:
  state_dir: {tmp_path / "state"}
  socket: {tmp_path / "control.sock"}
  pidfile: {tmp_path / "logwatchd.pid"}
  actions_log: null
  log: stderr
""")
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000", PYTHONPATH=str(REPO))
    code = "import sys; from logwatch.daemon.app import main; sys.exit(main())"
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(config),
                                 "--foreground", "--dry-run"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        messages: list[tuple[bytes, int | None]] = []
        deadline = time.monotonic() + 30
        try:
            # READY first, then watchdog pings every WATCHDOG_USEC/2.
            while sum(1 for m, _ in messages if m == b"WATCHDOG=1") < 2:
                messages.append(_recv_from(sock, deadline))
        except TimeoutError:
            pytest.fail(f"got {messages} before the timeout; stderr: {errlog.read_text()}")
        states = [m.split(b"\n") for m, _ in messages]
        assert any(b"READY=1" in s for s in states), messages
        ready_at = next(i for i, s in enumerate(states) if b"READY=1" in s)
        assert any(b"WATCHDOG=1" in s for s in states[ready_at:]), messages
        # NotifyAccess=main: systemd ignores messages from any other pid.
        assert {pid for _, pid in messages} == {proc.pid}, messages
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:
            data, pid = _recv_from(sock, deadline)
            if b"STOPPING=1" in data.split(b"\n"):
                assert pid == proc.pid
                break
        assert proc.wait(timeout=10) == 0, errlog.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
