"""Catching up on an old log: `logwatchd --stdin < FILE` reads a regular file to its end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from daemon_harness import DaemonProc

from logwatch.sources import StdinSource
from logwatch.state.store import Store


def _stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def _login(ip: str) -> str:
    # Courier's pop3d: Dovecot's rules do not compile on Python 3.11.2 (possessive groups).
    return (f"{_stamp()} mx pop3d: LOGIN, user=u{ip.replace('.', '')}, ip=[{ip}], port=[4051], "
            "protocol=POP3")


def _guess(ip: str, n: int) -> str:
    return (f"{_stamp()} mx postfix/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 550 5.1.1 "
            f"<g{n}@example.org>: Recipient address rejected: User unknown in local recipient "
            f"table; from=<x@example.net> to=<g{n}@example.org> proto=ESMTP helo=<h>")


def _filler(n: int) -> str:
    return f"{_stamp()} mx postfix/qmgr[7]: {n:010X}: removed"


def test_stdin_source_reads_a_regular_file_without_waiting(tmp_path: Path) -> None:
    lines = [b"%07d some log text" % i for i in range(300_000)]      # > one 4 MiB chunk
    path = tmp_path / "old.log"
    path.write_bytes(b"\n".join(lines))                             # no final newline
    got: list[bytes] = []
    with open(path, "rb") as stream:
        src = StdinSource(lambda _name, chunk: got.append(chunk), stream=stream)
        assert src.fileno() is None and src.pending     # epoll refuses regular files
        turns = 0
        while src.pending:
            src.process()
            turns += 1
            assert turns < 100
    assert src.eof and not src.pending
    assert len(got) > 1                                 # chunked: the loop keeps breathing
    assert b"".join(got).split(b"\n")[:-1] == lines
    assert src.stats()["stdin"]["lines"] == len(lines)


def test_stdin_source_on_dev_null_ends_at_once() -> None:
    with open(os.devnull, "rb") as stream:
        src = StdinSource(lambda _name, _chunk: None, stream=stream)
        assert src.pending
        src.process()
    assert src.eof and not src.pending and src.fileno() is None


def test_daemon_catches_up_on_a_regular_file_and_exits(tmp_path: Path) -> None:
    """The real daemon with a file on stdin: every event handled, a clean exit at its end."""
    logins = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(1500)]
    guesser = "203.0.113.9"
    lines: list[str] = []
    for i, ip in enumerate(logins):
        lines.append(_login(ip))
        lines.extend(_filler(i * 40 + k) for k in range(40))
        if i % 300 == 0:
            lines.append(_guess(guesser, i))
    last = "198.51.99.7"
    text = "\n".join(lines) + "\n" + _login(last)     # the last line lacks its newline
    path = tmp_path / "old.log"
    path.write_text(text)
    d = DaemonProc(tmp_path, {"sources": {"logfiles": []}, "bans": {"maxretry": 5}})
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(d.config), "--stdin"]
    with open(path, "rb") as stdin, open(d.stderr_path, "w") as err:
        proc = subprocess.run(argv, stdin=stdin, stdout=err, stderr=err, env=d.env(),
                              cwd=tmp_path, timeout=120, check=False)
    stderr = d.stderr()
    assert proc.returncode == 0, stderr
    assert f"action=eof source=stdin lines={len(lines) + 1}" in stderr
    assert "action=stop reason=end-of-input" in stderr
    store = Store(str(tmp_path / "state" / "state.db"))
    try:
        granted = {g.ip for g in store.load_grants()}
        banned = {b.net for b in store.load_bans()}
    finally:
        store.close()
    assert granted == {*logins, last}
    assert banned == {f"{guesser}/32"}
    dump = subprocess.run(["postmap", "-s", d.map], capture_output=True, text=True,
                          env=d.env(), timeout=60, check=True).stdout
    assert {row.split()[0] for row in dump.splitlines()} == {*logins, last}


def test_pipe_on_stdin_gets_a_wide_buffer() -> None:
    """A big log piped in may run 1 MiB ahead of us (the default pipe buffer: 64 KiB)."""
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb", buffering=0) as stream:
            got: list[bytes] = []
            src = StdinSource(lambda _name, chunk: got.append(chunk), stream=stream)
            os.set_blocking(w, False)
            block = b"".join(b"%09d line of an old log\n" % i for i in range(30_000))  # ~900 KB
            assert os.write(w, block) == len(block)     # fits: the writer is not held up
            src.process()
            src.process()
            assert b"".join(got) == block and len(got) == 2   # in 512 KiB chunks
    finally:
        os.close(w)


def test_sigterm_during_a_catch_up_stops_between_chunks(tmp_path: Path) -> None:
    """The file is read a chunk per loop turn: a SIGTERM is served long before its end."""
    path = tmp_path / "old.log"
    with open(path, "w") as out:
        for block in range(100):
            out.write("".join(_filler(block * 5000 + i) + "\n" for i in range(5000)))
    d = DaemonProc(tmp_path, {"sources": {"logfiles": []}})
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(d.config), "--stdin"]
    with open(path, "rb") as stdin, open(d.stderr_path, "w") as err:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=err, stderr=err, env=d.env(),
                                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "action=start " not in d.stderr():
            assert proc.poll() is None and time.monotonic() < deadline, d.stderr()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)        # 500,000 lines to go: seconds of work
        assert proc.wait(60) == 0, d.stderr()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = d.stderr()
    assert "action=stop signal=SIGTERM" in stderr
    assert "action=eof" not in stderr and "reason=end-of-input" not in stderr
