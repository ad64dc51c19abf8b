#!/usr/bin/env python3
"""Cost of the read-only control queries (logwatchctl offenders, check IP) at scale; prints figures.

Both run inside the daemon's loop, so their time is time the daemon reads no log. Usage:
  .venv/bin/python bench/query_bench.py [--offenders 100000] [--whitelist 20000]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logwatch.daemon.config import BanConfig, RelayConfig  # noqa: E402
from logwatch.engine.core import Engine  # noqa: E402
from logwatch.engine.whitelist import Whitelist  # noqa: E402
from logwatch.parsing.events import Event  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offenders", type=int, default=100_000)
    ap.add_argument("--whitelist", type=int, default=20_000, help="whitelist lines")
    args = ap.parse_args()
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    lines = [f"{ipaddress.IPv4Address(int(ipaddress.IPv4Address('100.64.0.0')) + 4 * i)}/30"
             for i in range(args.whitelist)]
    wl, _ = Whitelist.from_lines(lines, "/etc/logwatchd/whitelist")
    engine = Engine(RelayConfig(), BanConfig(), whitelist=wl, mynetworks=["10.0.0.0/8"])
    when = datetime.now()
    for i in range(args.offenders):
        ip = str(ipaddress.IPv4Address(base + i))
        for _ in range(1 + i % 3):
            engine.handle(Event(when, "auth-failed", ip, None, "smtp", "postfix/smtpd", "b", None))
    print(f"engine: {args.offenders:,} tracked offenders, whitelist {len(wl):,} entries")
    for limit in (100, None):
        t0 = time.perf_counter()
        shown, total = engine.offenders(limit)
        took = time.perf_counter() - t0
        print(f"  offenders(limit={limit}): {took * 1000:8.1f} ms  ({len(shown):,} of {total:,})")
    samples = []
    for i in range(200):
        ip = str(ipaddress.IPv4Address(base + (i * 7919) % args.offenders))
        t0 = time.perf_counter()
        engine.verdict(ip)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    print(f"  verdict(ip) (check IP): p50 {statistics.median(samples) * 1000:.2f} ms, "
          f"p99 {samples[int(len(samples) * 0.99) - 1] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
