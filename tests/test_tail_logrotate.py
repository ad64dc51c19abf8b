"""Real logrotate (create and copytruncate) rotating a file every few thousand lines while a
writer process appends 120,000 numbered lines and the tailer follows."""

from __future__ import annotations

import selectors
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logwatch.sources import FileTailer

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
TOTAL = 120_000

# A syslog-like writer: appends numbered lines at about 30,000 lines/s; in "create" mode it
# reopens the path once logrotate has created the new file (as rsyslog does on HUP), until
# then it keeps writing to the renamed one.
WRITER = r"""
import os, sys, time
path, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
ino = os.fstat(fd).st_ino
batch, pause = 150, 0.005
for start in range(1, total + 1, batch):
    for i in range(start, min(start + batch, total + 1)):
        if mode == "create":
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != ino:
                try:
                    new = os.open(path, os.O_WRONLY | os.O_APPEND)
                except FileNotFoundError:
                    new = -1
                if new >= 0:
                    os.close(fd)
                    fd, ino = new, os.fstat(new).st_ino
        os.write(fd, b"%08d postfix/smtpd[123]: connect from unknown[192.0.2.1]\n" % i)
    time.sleep(pause)
os.close(fd)
"""


def rotated_files(d: Path, base: str) -> list[Path]:
    """The rotated files oldest first, then the current one."""
    olds = sorted((p for p in d.iterdir() if p.name.startswith(base + ".")),
                  key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    return [*olds, d / base]


def run_rotation(tmp_path: Path, method: str, lag: float = 0.0
                 ) -> tuple[list[int], list[int], int]:
    """Return (numbers delivered, numbers found in the files, rotations done); with lag, the
    loop sleeps after each pass, like a daemon busy elsewhere, so rotations find data unread."""
    log = tmp_path / "mail.log"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n    rotate 1000\n    {method}\n    nocompress\n"
                    f"    missingok\n}}\n")
    state = tmp_path / "logrotate.state"
    delivered: list[bytes] = []
    tailer = FileTailer([str(log)], on_chunk=lambda n, c: delivered.append(c))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(TOTAL), method])
    stop = threading.Event()
    rotations = [0]
    errors: list[str] = []

    def rotator() -> None:
        while not stop.wait(0.12):
            r = subprocess.run([LOGROTATE, "-f", "-s", str(state), str(conf)],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                errors.append(r.stderr)
                return
            rotations[0] += 1

    th = threading.Thread(target=rotator)
    sel = selectors.DefaultSelector()
    try:
        th.start()
        tailer.process()
        fd = tailer.fileno()
        assert fd is not None
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while writer.poll() is None:
            assert time.monotonic() < deadline
            # As in the daemon: an inotify source is only processed when its fd is readable.
            if sel.select(0.05):
                tailer.process()
                time.sleep(lag)
        stop.set()
        th.join()
        # Let the tailer finish: the file it reads and the new one settle.
        last = b"%08d" % TOTAL
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if sel.select(0.05):
                tailer.process()
            if delivered and delivered[-1].endswith(b"\n") and last in delivered[-1][-80:]:
                break
    finally:
        stop.set()
        th.join()
        if writer.poll() is None:
            writer.kill()
        writer.wait()
        sel.close()
        tailer.close()
    assert not errors, errors
    assert writer.returncode == 0
    # A copy logrotate made while a line was being written ends in a torn line; it is
    # delivered (with a newline) when the copy is let go, out of order: not a line of ours.
    got = [int(line[:8]) for line in b"".join(delivered).split(b"\n")[:-1]
           if line.endswith(b"]")]
    in_files: list[int] = []
    for p in rotated_files(tmp_path, "mail.log"):
        in_files += [int(line[:8]) for line in p.read_bytes().split(b"\n")[:-1]]
    return got, in_files, rotations[0]


@pytest.mark.slow
def test_logrotate_create(tmp_path: Path) -> None:
    got, in_files, rotations = run_rotation(tmp_path, "create", lag=0.03)
    assert rotations >= 10, rotations            # a rotation every few thousand lines
    assert in_files == list(range(1, TOTAL + 1))  # the writer lost nothing either
    assert len(got) == TOTAL
    assert got == list(range(1, TOTAL + 1))       # exactly once, in order


@pytest.mark.slow
def test_logrotate_copytruncate(tmp_path: Path) -> None:
    """copytruncate loses the lines written between logrotate's copy and its truncate: they
    are in no file. The tailer can only guarantee: every line that is in the files is
    delivered, nothing is delivered twice or out of order, nothing is invented."""
    got, in_files, rotations = run_rotation(tmp_path, "copytruncate", lag=0.1)
    assert rotations >= 10, rotations
    assert got == sorted(set(got)), "duplicate or out-of-order line"
    assert set(got) <= set(range(1, TOTAL + 1))
    missing = set(in_files) - set(got)
    assert not missing, f"{len(missing)} lines in the files never delivered: {sorted(missing)[:10]}"
    # The newest line written reaches us, unless a last rotation racing the writer's end lost
    # it (then it is in no file either).
    assert got[-1] == max(in_files + got)
    lost_by_logrotate = TOTAL - len(set(in_files))
    print(f"rotations={rotations} delivered={len(got)} in_files={len(in_files)} "
          f"lost_by_logrotate={lost_by_logrotate} delivered_not_in_files="
          f"{len(set(got) - set(in_files))}")
