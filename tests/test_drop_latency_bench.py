"""bench/drop_latency_bench.py: both contenders ban at the 5th line (not the 4th) and the bench
leaves nothing behind, even when it is stopped in the middle of a run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from netns import needs_netns

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "drop_latency_bench.py"

pytestmark = [
    needs_netns,
    pytest.mark.skipif(not Path("/usr/libexec/sshguard/sshg-blocker").exists(),
                       reason="needs Debian's sshguard"),
    pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables"),
]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def ours(pid: int) -> set[str]:
    """The namespaces this bench process created (named after its pid)."""
    return {n for n in namespaces() if n.startswith(f"ldrp{pid % 100000}")}


def cmdlines(text: str) -> dict[int, list[str]]:
    """Processes whose command line mentions text: pid -> argv."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                raw = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in raw:
                found[int(d.name)] = raw.decode(errors="replace").split("\0")
    return found


def parent(pid: int) -> int:
    """The parent pid (0 when pid is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def sweep(bench_pid: int, base: str | None) -> None:
    """After a failure: remove whatever a broken bench left (its processes, namespace, dir)."""
    if base:
        for pid in cmdlines(base):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)
    time.sleep(0.5)
    for name in ours(bench_pid):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_both_ban_at_the_fifth_line_and_report() -> None:
    proc = subprocess.Popen([sys.executable, str(BENCH), "--ips", "3", "--pause", "0.3",
                             "--contenders", "logwatchd,sshguard", "--tools", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)    # the bench cleans up on SIGTERM
            proc.wait(60)
        left = ours(proc.pid)
        sweep(proc.pid, None)
    assert proc.returncode == 0, err
    assert not left, "namespace left behind"
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r"^(logwatchd|sshguard) +\d+ .*$", out, re.M)}
    assert set(rows) == {"logwatchd", "sshguard"}, out
    for name, row in rows.items():
        fields = row.split()
        # name n p50 p95 p99 max misses early: every IP banned at line 5, none before.
        assert fields[1] == "3" and fields[6:8] == ["0", "0"], (name, row)


def test_stopped_midway_leaves_nothing_behind() -> None:
    proc = subprocess.Popen([sys.executable, str(BENCH), "--ips", "500", "--pause", "0.2",
                             "--contenders", "logwatchd,sshguard", "--tools", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = None
    try:
        # Wait until the run is measuring: sshguard's tail follows the bench's log file.
        deadline = time.monotonic() + 90
        tails: list[list[str]] = []
        while time.monotonic() < deadline and not tails:
            tails = [argv for pid, argv in cmdlines("lwd-dropbench-").items()
                     if argv[0] == "tail" and parent(parent(pid)) == proc.pid]
            time.sleep(0.2)
        assert tails, "the bench never started sshguard's tail"
        base = str(Path(tails[0][-2]).parent)        # tail -n0 -F BASE/mail.log
        assert base.startswith(tempfile.gettempdir()), base
        assert ours(proc.pid), "no namespace of this run"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert not ours(proc.pid), "namespace left behind"
        assert not cmdlines(base), "processes left behind"
        assert not Path(base).exists(), "temp dir left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sweep(proc.pid, base)
