#!/usr/bin/env python3
"""Accounting end to end: the real `logwatchd --stdin --dry-run` with accounting on, reading a
synthetic Postfix log of whole messages (bench/messagelog.py; default 100,000 messages) until
the end of its input: parse + correlation + stats log (fsynced) + state saved with the positions.

Prints, next to the same daemon with accounting off on the same log in the same run:
  lines/s of wall time (process start to exit, best of --runs; target >= 300,000), and the
  stats-log lines written (one per message);
  the same with the log as a file the daemon follows from its start (how it reads
  /var/log/mail.log): wall time from its start until the stats log holds the last message
  (accounting off: until `logwatchctl status` counts every line read), polled every 10 ms;
  the CPU seconds of the accounting process (accountingworker.py: its own figure, logged at
  its stop; wait4() of the daemon counts it too once reaped) and of the daemon without it;
  the RSS (VmRSS) of the daemon and of its accounting process following a log of --messages
  messages that were never delivered nor removed, once both have read it all: that many open
  messages (target < 100 MB for the process holding them).
Usage: .venv/bin/python bench/accounting_bench.py [--messages N] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from messagelog import generate  # noqa: E402

from logwatch.services.control import request  # noqa: E402


def write_config(base: Path, accounting: bool, follow: Path | None = None) -> Path:
    settings = {
        "sources": {"logfiles": [str(follow)] if follow else [], "from_start": True},
        "rules": {"dirs": [str(REPO / "rules")], "local_dir": None},
        "relay": {"map": f"hash:{base / 'relay'}", "mynetworks": []},
        "bans": {"whitelist": None},
        "firewall": {"backend": "none"},
        "watchdog": {"enabled": False},
        "daemon": {"state_dir": str(base / "state"), "socket": str(base / "control.sock"),
                   "log": "stderr", "actions_log": None},
        "accounting": {"enabled": accounting, "stats_log": str(base / "stats.log")},
    }
    path = base / f"logwatchd-{int(accounting)}{'-follow' if follow else ''}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_once(config: Path, log: Path, base: Path
             ) -> tuple[float, float, tuple[float, float], str]:
    """(wall seconds, CPU seconds in all, (CPU seconds of the accounting process, its seconds
    waiting for a CPU), daemon log) of one run on a fresh state."""
    (base / "control.sock").unlink(missing_ok=True)
    shutil.rmtree(base / "state", ignore_errors=True)
    (base / "stats.log").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(config), "--stdin",
            "--dry-run"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "rb") as source, open(base / "daemon.log", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=source, stdout=err, stderr=err, env=env, cwd=base)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    text = (base / "daemon.log").read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0 or "action=stop reason=end-of-input" not in text:
        raise SystemExit(f"logwatchd failed:\n{text[-3000:]}")
    found = re.search(r"action=accounting-stop pid=\S+ cpu=([0-9.]+) runqueue_wait=([0-9.]+)",
                      text)
    worker = (float(found[1]), float(found[2])) if found else (0.0, 0.0)
    return wall, usage.ru_utime + usage.ru_stime, worker, text


def last_seq(path: Path) -> int:
    """The seq of the stats log's last whole line (0: none yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            tail = fh.read()
    except OSError:
        return 0
    lines = tail.split(b"\n")[:-1]
    return int(lines[-1].split(b"\t", 1)[0][4:]) if lines and lines[-1].startswith(b"seq:") else 0


def run_follow(config: Path, base: Path, lines: int, messages: int, accounting: bool,
               timeout: float = 600.0) -> float:
    """Wall seconds from the daemon's start, following the log file from its start (how it
    reads /var/log/mail.log), until it has read every line and, with accounting on, the stats
    log holds the last message."""
    (base / "control.sock").unlink(missing_ok=True)
    shutil.rmtree(base / "state", ignore_errors=True)
    (base / "stats.log").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(config), "--dry-run"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(base / "daemon.log", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=env, cwd=base)
    try:
        while time.perf_counter() - started < timeout:
            time.sleep(0.01)
            if accounting:
                if last_seq(base / "stats.log") >= messages:
                    return time.perf_counter() - started
                continue
            try:
                st = request(str(base / "control.sock"), {"cmd": "status"}, timeout=30)
            except OSError:
                continue
            if st.get("lines_read", 0) >= lines:
                return time.perf_counter() - started
        raise SystemExit("the daemon did not read the whole file in time")
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def vmrss(pid: int) -> float:
    """VmRSS of a process in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024


def rss_holding(config: Path, base: Path, lines: int,
                timeout: float = 600.0) -> tuple[float, float, int]:
    """(RSS of the daemon, of its accounting process in MiB, open messages) once both have
    read the followed file to its end."""
    shutil.rmtree(base / "state", ignore_errors=True)
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(config), "--dry-run"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(base / "daemon.log", "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=env, cwd=base)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                st = request(str(base / "control.sock"), {"cmd": "status"}, timeout=30)
            except OSError:
                continue
            acct = st.get("accounting") or {}
            worker = (acct.get("worker") or {}).get("pid")
            if st.get("lines_read", 0) >= lines and (
                    not acct or (acct.get("parser") or {}).get("lines", 0) >= lines):
                time.sleep(1.0)       # its counters come at most once a second: settled
                return vmrss(proc.pid), vmrss(worker) if worker else 0.0, int(acct.get("open", 0))
        raise SystemExit("the daemon did not read the whole file in time")
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lwd-acct-") as tmp:
        base = Path(tmp)
        full, open_only = base / "messages.log", base / "open.log"
        data = generate(args.messages, seed=args.seed)
        full.write_bytes(data)
        lines = data.count(b"\n")
        open_only.write_bytes(generate(args.messages, seed=args.seed, complete=False))
        del data
        on, off = write_config(base, True), write_config(base, False)
        print(f"log: {args.messages:,} messages, {lines:,} lines, "
              f"{full.stat().st_size / 1e6:.1f} MB; logwatchd --stdin --dry-run until the end "
              f"of input, best of {args.runs}")
        for label, config in (("accounting off (peer):", off), ("accounting on:", on)):
            runs = [run_once(config, full, base) for _ in range(args.runs)]
            wall, cpu, (worker_cpu, waited), _text = min(runs)
            written = count_lines(base / "stats.log")
            # Waiting for a CPU: the machine's other load (the accounting process has a core
            # of its own only when nothing else runs).
            split = (f" = daemon {cpu - worker_cpu:.2f} + accounting process {worker_cpu:.2f}"
                     f", which waited {waited:.2f} s for a CPU" if worker_cpu else "")
            print(f"{label:<28} {lines / wall:>10,.0f} lines/s ({wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU{split}; {written:,} stats-log lines)")
        print(f"the same log as a file the daemon follows from its start (no --stdin), until "
              f"it has read it all and the stats log holds the last message, best of {args.runs}")
        for label, accounting in (("accounting off (peer):", False), ("accounting on:", True)):
            config = write_config(base, accounting, follow=full)
            wall = min(run_follow(config, base, lines, args.messages, accounting) for _ in range(args.runs))
            print(f"{label:<28} {lines / wall:>10,.0f} lines/s ({wall:.2f} s wall)")
        open_lines = count_lines(open_only)
        for label, accounting in (("accounting off (peer):", False), ("accounting on:", True)):
            config = write_config(base, accounting, follow=open_only)
            rss, worker_rss, held = rss_holding(config, base, open_lines)
            split = (f" = daemon {rss:.1f} + accounting process {worker_rss:.1f}"
                     if worker_rss else "")
            print(f"{'RSS, ' + label:<28} {rss + worker_rss:>10.1f} MB{split} (following the "
                  f"log of {args.messages:,} messages never delivered: {held:,} open)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
