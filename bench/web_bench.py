#!/usr/bin/env python3
"""The web listener's speed, next to what an admin had before (the control socket).

Part 1 (no root): a real logwatchd whose store holds 100,000 bans and 30 days of per-minute/
per-hour counts before it starts; times over HTTP (a new connection each, as a scraper or a
browser does): /metrics, the status page's first response, the plot data of a day and a
month, a search among the bans; next to `logwatchctl status` and the full `bans` listing over
the control socket. Targets: /metrics < 50 ms, page < 200 ms, plot data < 100 ms.

Part 2 (root; --drop): line -> DROP p99 in a network namespace with the iptables backend
(bench/drop_latency_bench.py's measurement), first with nobody on the page, then while a client
reloads the status page and /metrics every 100 ms. Target: p99 <= 20 ms.

    .venv/bin/python bench/web_bench.py [--bans 100000] [--n 30] [--cold 5] [--drop] [--ips 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from benchstats import nearest_rank as pct  # noqa: E402


def timed(n: int, call: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000)
    return out


def fetch(url: str) -> Callable[[], bytes]:
    def call() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()
    return call


def prefill_bans(state: Path, count: int, now: float) -> None:
    from logwatch.engine.model import Ban
    from logwatch.state.store import Store

    store = Store(state / "state.db")
    try:
        store.put_bans(Ban(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", since=now - i,
                           expires_at=now + 86400, score=5.0,
                           reason={"user-unknown": 5} if i % 3 else {"auth-failed": 5})
                       for i in range(count))
        store.mark_started()
    finally:
        store.close()


def prefill_offenders(log: Path, count: int) -> None:
    """One failed SASL login each from `count` addresses (tracked offenders below the ban)."""
    from webdaemon import stamp

    with open(log, "a") as fh:
        for i in range(count):
            fh.write(f"{stamp()} mx postfix/smtpd[4000]: warning: unknown[172.{16 + (i >> 16 & 15)}."
                     f"{i >> 8 & 255}.{i & 255}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n")


def row(name: str, times: list[float], target: str = "") -> None:
    print(f"  {name:48} p50 {pct(times, 50):7.1f}  p99 {pct(times, 99):7.1f}  "
          f"max {max(times):7.1f}  {target}")


def part1(args: argparse.Namespace) -> None:
    from webdaemon import WebDaemon, prefill_series

    with tempfile.TemporaryDirectory(prefix="lwd-webbench-") as tmp, ExitStack() as stack:
        w = WebDaemon(Path(tmp), settings={"relay": {"enabled": False},
                                           "sources": {"from_start": True}})
        now = time.time()
        prefill_series(Path(tmp) / "state", now)
        prefill_bans(Path(tmp) / "state", args.bans, now)
        prefill_offenders(w.proc.log, args.offenders)
        t = time.perf_counter()
        w.start(prefill=False)
        stack.callback(w.stop)
        while w.proc.req(cmd="status")["lines_read"] < args.offenders:
            time.sleep(0.2)
        st = w.proc.req(cmd="status")
        tracked = w.proc.req(cmd="offenders", limit=1)["total"]
        print(f"logwatchd with {st['bans']} bans, {tracked} offenders below a ban and 30 days of "
              f"counts (ready in {time.perf_counter() - t:.1f} s); {args.n} requests each, ms:")
        fetch(w.url + "/")()            # imports, first page
        row("GET / nothing cached (new ban, caches expired)", cold(w, "/?span=day", args.cold),
            "(target < 200)")
        row("GET /api/series month, nothing cached", cold(
            w, "/api/series?span=month&prefix=events.", args.cold), "(target < 100)")
        row("GET /metrics", timed(args.n, fetch(w.url + "/metrics")), "(target < 50)")
        row("GET /metrics right after a new ban", after_ban(w, args.n), "(target < 50)")
        row("GET / again (what cannot have changed reused)", timed(args.n, fetch(w.url + "/")),
            "(target < 200)")
        row("GET /api/series day, events.*, again",
            timed(args.n, fetch(w.url + "/api/series?span=day&prefix=events.")),
            "(target < 100)")
        row("GET /api/table bans q=10.1.2.", timed(
            args.n, fetch(w.url + "/api/table?table=bans&q=10.1.2.")))
        print("  peer: the control socket (logwatchctl) on the same daemon:")
        row("status (logwatchctl status)", timed(args.n, lambda: w.proc.req(cmd="status")))
        row("bans (logwatchctl bans, all of them)",
            timed(max(3, args.n // 10), lambda: w.proc.req(cmd="bans")))


def cold(w: object, path: str, n: int) -> list[float]:
    """Each request once the page's caches expired (web/app.py SERIES_TTL, the offenders'
    and bans' pages) and after a new ban: everything is read again."""
    from logwatch.web.app import SERIES_TTL

    out = []
    for _ in range(n):
        time.sleep(SERIES_TTL + 0.5)
        cold.bans += 1                                   # type: ignore[attr-defined]
        w.proc.req(cmd="ban", ip=f"198.18.1.{cold.bans}")   # type: ignore[attr-defined]
        out += timed(1, fetch(w.url + path))            # type: ignore[attr-defined]
    return out


cold.bans = 0       # type: ignore[attr-defined]


def after_ban(w: object, n: int) -> list[float]:
    """Each scrape right after a ban (the counts by reason follow the bans as they change)."""
    out = []
    for i in range(n):
        w.proc.req(cmd="ban", ip=f"198.18.0.{i + 1}")     # type: ignore[attr-defined]
        out += timed(1, fetch(w.url + "/metrics"))      # type: ignore[attr-defined]
    return out


def _reloader(url: str, stop: threading.Event, counts: list[int]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        for path in ("/", "/metrics"):
            try:
                fetch(url + path)()
                counts[0] += 1
            except OSError:
                counts[1] += 1
        stop.wait(max(0.0, 0.1 - (time.perf_counter() - t)))


def drop_inner(args: argparse.Namespace) -> None:
    import drop_latency_bench as drop
    from webdaemon import WebDaemon, prefill_series

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(args.base)
    log = base / "mail.log"
    log.touch()
    with ExitStack() as stack:
        w = WebDaemon(base / "logwatchd", settings={
            "sources": {"logfiles": [str(log)], "from_start": True},
            "firewall": {"backend": "iptables", "chain": "LWD_WEBBENCH", "ports": [25]},
            "relay": {"enabled": False}})
        prefill_series(base / "logwatchd" / "state", time.time())
        prefill_offenders(log, args.offenders)      # the page ranks them on each request
        w.start(prefill=False)
        stack.callback(w.stop)
        while w.proc.req(cmd="status")["lines_read"] < args.offenders:
            time.sleep(0.2)
        print(f"logwatchd with {w.proc.req(cmd='offenders', limit=1)['total']} offenders "
              f"below a ban, 30 days of counts, the iptables backend")
        time.sleep(1.0)
        results = []
        for label, reload_page in (("nobody on the page", False),
                                   ("page+/metrics every 100 ms", True)):
            c = drop.Contender("logwatchd", "LWD_WEBBENCH", note=label)
            stop, counts = threading.Event(), [0, 0]
            thread = threading.Thread(target=_reloader, args=(w.url, stop, counts), daemon=True)
            if reload_page:
                thread.start()
            try:
                drop.measure([c], log, args.ips, args.pause, args.poll, None)
            finally:
                stop.set()
                if reload_page:
                    thread.join()
            served = f"{counts[0]} served, {counts[1]} failed" if reload_page else ""
            results.append((c, served))
            # The next run's IPs must be fresh: lift this run's bans.
            w.proc.req(cmd="flush")
        print("line 5 appended -> DROP rule listed by iptables -S (ms)")
        print(f"{'':28} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  misses  requests")
        for c, served in results:
            t = list(c.times.values())
            print(f"  {c.note:26} {len(t):4} {pct(t, 50):7.1f} {pct(t, 95):7.1f} "
                  f"{pct(t, 99):7.1f} {max(t):7.1f}  {c.misses:6}  {served}")
        print("  (target: p99 <= 20 ms while the page is reloaded)")


def drop_outer(args: argparse.Namespace) -> int:
    from netns import netns

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = tempfile.mkdtemp(prefix="lwd-webdrop-")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        ns = stack.enter_context(netns("lwdw"))
        argv = ns.argv([sys.executable, __file__, "--inner", "--base", base,
                        "--ips", str(args.ips), "--pause", str(args.pause),
                        "--poll", str(args.poll), "--offenders", str(args.offenders)])
        child = subprocess.Popen(argv, start_new_session=True)
        try:
            return child.wait(timeout=args.ips * 2 * (args.pause + 10) + 180)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            return 1
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bans", type=int, default=100_000)
    ap.add_argument("--offenders", type=int, default=100_000,
                    help="addresses with one failure each (tracked, not banned)")
    ap.add_argument("--n", type=int, default=30, help="requests per figure")
    ap.add_argument("--cold", type=int, default=5,
                    help="requests with nothing cached (each waits 10.5 s for the caches)")
    ap.add_argument("--drop", action="store_true", help="also part 2 (root, netns, iptables)")
    ap.add_argument("--ips", type=int, default=50, help="part 2: fresh IPs per run")
    ap.add_argument("--pause", type=float, default=0.5)
    ap.add_argument("--poll", type=float, default=0.001)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        drop_inner(args)
        return
    part1(args)
    if args.drop:
        if os.geteuid() != 0:
            raise SystemExit("--drop needs root (network namespace, iptables)")
        sys.exit(drop_outer(args))


if __name__ == "__main__":
    main()
