"""The figure of issue 12: 100,000 numbered login lines through the real daemon while real
logrotate rotates the log by rename ("create") and by copytruncate, with bursts of rotations
50 ms apart and two kill -9 of the daemon: every line's event exactly once.

Each line is a qpopper login from its own address, so each line gives one grant. No line may
be lost (the store holds a grant for every address) and none read twice (a second read of a
line would show in the actions log as a "refresh" or a second "grant" of its address).
copytruncate loses, by its own design, lines written between its copy and its truncate; the
writer is stopped (SIGSTOP) around each copytruncate so that every line is in some file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from logwatch.state.store import Store
from tailmode import tail_mode  # noqa: F401  (a fixture)

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
TOTAL = 100_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="needs logrotate"),
]

# Appends TOTAL numbered lines at a steady rate, reopening the path when logrotate has
# replaced it (as rsyslog does on its HUP), until then writing to the renamed file.
WRITER = r"""
import os, sys, time
path, total, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
ino = os.fstat(fd).st_ino
batch = 100
t0 = time.monotonic()
for start in range(1, total + 1, batch):
    stamp = time.strftime("%b %e %H:%M:%S").encode()
    for n in range(start, min(start + batch, total + 1)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_ino != ino:
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            ino = os.fstat(fd).st_ino
        ip = b"10.%d.%d.%d" % (n >> 16, (n >> 8) & 255, n & 255)
        os.write(fd, b"%s mail qpopper[%d]: POP login by user \"u%d\" at (%s) %s\n"
                 % (stamp, 1000 + n % 5000, n, ip, ip))
    ahead = t0 + (start + batch) / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
os.close(fd)
"""


def ip_of(n: int) -> str:
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


class Rotator(threading.Thread):
    """Runs logrotate: a rotation every ~0.4 s, alternating rename and copytruncate, and
    now and then a burst of three rename rotations 50 ms apart."""

    def __init__(self, base: Path, log: Path, writer: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.writer = writer
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.done: Counter = Counter()
        self.confs = {}
        for method in ("create", "copytruncate"):
            conf = base / f"logrotate-{method}.conf"
            conf.write_text(f"{log} {{\n    rotate 10000\n    {method}\n    nocompress\n"
                            f"    missingok\n}}\n")
            self.confs[method] = (conf, base / f"logrotate-{method}.state")

    def rotate(self, method: str) -> None:
        conf, state = self.confs[method]
        stopped = method == "copytruncate" and self.writer.poll() is None
        if stopped:                 # no line between copy and truncate (see the docstring)
            self.writer.send_signal(signal.SIGSTOP)
        try:
            r = subprocess.run([LOGROTATE, "-f", "-s", str(state), str(conf)],
                               capture_output=True, text=True, timeout=30)
        finally:
            if stopped:
                self.writer.send_signal(signal.SIGCONT)
        if r.returncode != 0:
            self.errors.append(r.stderr)
        self.done[method] += 1

    def run(self) -> None:
        i = 0
        while not self.stop.wait(0.4):
            i += 1
            if i % 4 == 0:
                for _ in range(3):
                    self.rotate("create")
                    self.done["burst"] += 1
                    time.sleep(0.05)
            else:
                self.rotate("copytruncate" if i % 2 else "create")


def wait_grants(d: DaemonProc, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = d.req(cmd="status")["grants"]
        except OSError:
            got = -1
        if got >= want:
            break
        time.sleep(0.2)
    return got


@pytest.mark.usefixtures("tail_mode")
def test_100k_lines_mixed_rotations_bursts_and_kill9_exactly_once(tmp_path: Path) -> None:
    d = DaemonProc(tmp_path, {"relay": {"grace": 36000},
                              "daemon": {"dry_run": True, "log": "stderr",
                                         "state_dir": str(tmp_path / "state"),
                                         "socket": str(tmp_path / "control.sock"),
                                         "actions_log": str(tmp_path / "actions.log")}})
    writer = None
    rot = None
    t0 = time.monotonic()
    try:
        d.start()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(d.log), str(TOTAL),
                                   "5000"])
        rot = Rotator(tmp_path, d.log, writer)
        rot.start()
        for at in (6.0, 13.0):          # two kill -9 in mid-stream; rotations go on meanwhile
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            d.kill9()
            time.sleep(0.3)
            # Ready once its first pass over the backlog is done: that may take a while.
            d.start(wait=False).wait_ready(timeout=120)
        writer.wait(timeout=60)
        rot.stop.set()
        rot.join(timeout=30)
        got = wait_grants(d, TOTAL, 60)
        d.stop()
    finally:
        if rot is not None:
            rot.stop.set()
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        d.stop(signal.SIGKILL)
    elapsed = time.monotonic() - t0
    assert rot is not None and not rot.errors, rot.errors
    assert writer.returncode == 0
    store = Store(tmp_path / "state" / "state.db")
    try:
        granted = {g.ip for g in store.load_grants()}
    finally:
        store.close()
    actions = Counter()
    kinds = Counter()
    for line in (tmp_path / "actions.log").read_text().splitlines():
        rec = dict(f.split(":", 1) for f in line.split("\t"))
        kinds[rec["action"]] += 1
        if rec["action"] in ("grant", "refresh"):
            actions[rec["ip"]] += 1
    missing = [n for n in range(1, TOTAL + 1) if ip_of(n) not in granted]
    twice = sorted(ip for ip, c in actions.items() if c > 1)
    print(f"lines={TOTAL} rotations={dict(rot.done)} kill9=2 elapsed={elapsed:.1f}s "
          f"granted={len(granted)} missing={len(missing)} read_twice={len(twice)} "
          f"actions={dict(kinds)}")
    assert got == TOTAL or missing, got
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:5]}"
    assert not twice and kinds["refresh"] == 0, f"{len(twice)} lines read twice: {twice[:5]}"
    assert rot.done["create"] >= 15 and rot.done["copytruncate"] >= 5, rot.done
    assert elapsed < 240, elapsed                 # loose: a hang, not a speed target
