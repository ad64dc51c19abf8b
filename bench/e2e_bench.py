#!/usr/bin/env python3
"""End-to-end latency and cost of a running logwatchd (in its own network namespace).

Prints p50/p99 from appending a log line to (a) `postmap -q` answering OK for a login's IP and
(b) the DROP rule for a guesser being in the kernel (iptables -S), then the daemon's RSS and CPU
while a writer appends --rate lines/s (default 1,000) for --seconds (default 60).
Targets: p99 < 50 ms for both; RSS < 100 MB; CPU < 10 % of one core at 1,000 lines/s.
Needs root (network namespace, iptables) and postfix (postmap). Usage:
    sudo .venv/bin/python bench/e2e_bench.py [--seconds 60] [--samples 200] [--rate 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import psutil  # noqa: E402
from benchstats import pct  # noqa: E402
from daemon_harness import DaemonProc  # noqa: E402

CHAIN = "LWD_BENCH"


def stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def login(ip: str) -> str:
    return (f"{stamp()} mx dovecot: imap-login: Login: user=<bench>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=77, TLS, session=<b3nch>")


def guess(ip: str, user: str) -> str:
    return (f"{stamp()} mx postfix/smtpd[99]: NOQUEUE: reject: RCPT from unknown[{ip}]: 550 5.1.1 "
            f"<{user}@example.org>: Recipient address rejected: User unknown in local recipient "
            f"table; from=<x@example.net> to=<{user}@example.org> proto=ESMTP helo=<h>")


def noise(i: int) -> str:
    return (f"{stamp()} mx postfix/qmgr[77]: {i:010X}: from=<list@example.com>, size=4211, "
            f"nrcpt=1 (queue active)")


def append(path: Path, lines: list[str]) -> float:
    data = "".join(line + "\n" for line in lines)
    with open(path, "a") as fh:
        fh.write(data)
        fh.flush()
    return time.perf_counter()


def grant_latency(d: DaemonProc, n: int) -> list[float]:
    """Append a login, poll the map file (stat) and confirm with postmap -q."""
    db = d.base / "relay.db"
    out = []
    for i in range(n):
        ip = f"100.64.{i // 250}.{i % 250 + 1}"
        before = db.stat()
        sig = (before.st_ino, before.st_mtime_ns, before.st_size)
        t0 = append(d.log, [login(ip)])
        deadline = t0 + 5
        while time.perf_counter() < deadline:
            try:
                st = db.stat()
            except FileNotFoundError:
                continue
            if (st.st_ino, st.st_mtime_ns, st.st_size) != sig:
                q = subprocess.run(["postmap", "-q", ip, d.map], capture_output=True, text=True,
                                   env=d.env())
                if q.stdout.strip() == "OK":
                    break
                sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        else:
            raise SystemExit(f"grant of {ip} never appeared in the map")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def ban_latency(d: DaemonProc, n: int) -> list[float]:
    """Append one guess (maxretry 1), poll iptables -S until the DROP rule is there."""
    out = []
    for i in range(n):
        ip = f"198.18.{i // 250}.{i % 250 + 1}"
        want = f"-A {CHAIN} -s {ip}/32"
        t0 = append(d.log, [guess(ip, f"b{i}")])
        deadline = t0 + 5
        while time.perf_counter() < deadline:
            rules = subprocess.run(["iptables", "-w", "-S", CHAIN], capture_output=True,
                                   text=True).stdout
            if want in rules:
                break
        else:
            raise SystemExit(f"ban of {ip} never reached the kernel")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def sustained(d: DaemonProc, rate: int, seconds: float) -> tuple[float, float, int]:
    """Write `rate` lines/s (90 % noise, 10 % logins and guesses); return max RSS MB, CPU %."""
    proc = psutil.Process(d.proc.pid)
    rng = random.Random(7)
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    cpu0 = sum(proc.cpu_times()[:2])
    start = time.perf_counter()
    rss = 0
    written = 0
    i = 0
    next_sample = start
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            break
        lines = []
        for _ in range(per_tick):
            i += 1
            r = rng.random()
            if r < 0.05:
                lines.append(login(f"100.65.{rng.randrange(8)}.{rng.randrange(1, 250)}"))
            elif r < 0.10:
                lines.append(guess(f"198.19.{rng.randrange(64)}.{rng.randrange(1, 250)}",
                                   f"u{rng.randrange(1000)}"))
            else:
                lines.append(noise(i))
        append(d.log, lines)
        written += len(lines)
        if now >= next_sample:
            rss = max(rss, proc.memory_info().rss)
            next_sample = now + 1.0
        target = start + (written / rate)
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    wall = time.perf_counter() - start
    time.sleep(0.5)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    rss = max(rss, proc.memory_info().rss)
    return rss / 1e6, 100 * cpu / wall, written


def inner(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="lwd-bench-"))
    d = DaemonProc(base, {
        "firewall": {"backend": "iptables", "chain": CHAIN, "ports": [25]},
        "bans": {"maxretry": 1, "bantime": 3600},
        "daemon": {"log": "stderr"},
    })
    try:
        d.start()
        time.sleep(0.5)
        g = grant_latency(d, args.samples)
        b = ban_latency(d, args.samples)
        print(f"login -> postmap -q OK   : p50 {pct(g, 50):6.1f} ms  p99 {pct(g, 99):6.1f} ms  "
              f"max {max(g):6.1f} ms  (n={len(g)}; target p99 < 50 ms)")
        print(f"guess -> DROP in kernel  : p50 {pct(b, 50):6.1f} ms  p99 {pct(b, 99):6.1f} ms  "
              f"max {max(b):6.1f} ms  (n={len(b)}; target p99 < 50 ms; includes one "
              f"iptables -S poll, about {statistics.median(_poll_cost(5)):.0f} ms)")
        d.req(cmd="flush")
        rss, cpu, written = sustained(d, args.rate, args.seconds)
        st = d.req(cmd="status")
        print(f"sustained {args.rate} lines/s for {args.seconds:g} s ({written} lines, "
              f"{st['lines_read']} read by the daemon): RSS max {rss:.1f} MB (target < 100), "
              f"CPU {cpu:.1f} % of a core (target < 10)")
    finally:
        d.stop()
        subprocess.run(["iptables", "-w", "-D", "INPUT", "-p", "tcp", "-m", "multiport",
                        "--dports", "25", "-j", CHAIN], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _poll_cost(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["iptables", "-w", "-S", CHAIN], capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="sustained-load duration")
    p.add_argument("--rate", type=int, default=1000, help="lines per second in the load phase")
    p.add_argument("--samples", type=int, default=200, help="latency samples of each kind")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        inner(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespace, iptables)")
    ns = f"lwdbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--inner",
                "--seconds", str(args.seconds), "--rate", str(args.rate),
                "--samples", str(args.samples)]
        child = subprocess.Popen(argv)
        try:
            sys.exit(child.wait())
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            child.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
