#!/usr/bin/env python3
"""Ban speed per firewall backend and engine memory for 1,000,000 offenders; prints the figures.

Runs as root inside a network namespace it creates and deletes. Usage:
  .venv/bin/python bench/ban_bench.py [--backends iptables,ipset,nftables] [--batch 10000]
      [--reconcile 100000] [--iptables-reconcile 100000] [--offenders 1000000] [--skip-engine]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from netns import netns  # noqa: E402

from logwatch.daemon.config import BanConfig, FirewallConfig, RelayConfig  # noqa: E402
from logwatch.effectors.firewall import Firewall, make_firewall  # noqa: E402
from logwatch.engine.model import Ban  # noqa: E402


def v4(base: int, n: int) -> list[str]:
    """n consecutive IPv4 /32 nets starting at the integer base."""
    return [f"{ipaddress.IPv4Address(base + i)}/32" for i in range(n)]


def bans_for(nets: list[str], ttl: float | None = 3600.0) -> list[Ban]:
    now = time.time()
    return [Ban(net=n, since=now, expires_at=None if ttl is None else now + ttl) for n in nets]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def single_bans(fw: Firewall, base: int, n: int = 20) -> tuple[float, float]:
    """Median and worst time of n one-ban calls (the tool returns once the kernel has it)."""
    times = [timed(lambda net=net: fw.ban(bans_for([net]))) for net in v4(base, n)]
    return statistics.median(times), max(times)


def bench_backend(backend: str, batch: int, reconcile_n: int) -> None:
    with netns("lwb") as ns:
        cfg = FirewallConfig(backend=backend, ports=[25, 465, 587])
        fw = make_firewall(cfg, netns=ns.name)
        overhead = statistics.median(
            timed(lambda: subprocess.run(ns.argv(["true"]), check=True)) for _ in range(10))
        fw.setup()
        med, worst = single_bans(fw, 0x0A000000)
        print(f"{backend:9} 1 ban, near-empty set:        median {ms(med)}, worst {ms(worst)} "
              f"(includes {ms(overhead)} of `ip netns exec`)")
        t = timed(lambda: fw.ban(bans_for(v4(0x0B000000, batch))))
        print(f"{backend:9} {batch:,} new bans, one batch:  {ms(t)}")
        med, worst = single_bans(fw, 0x0A100000)
        print(f"{backend:9} 1 ban, {batch:,} present:        median {ms(med)}, worst {ms(worst)}")
        assert len(fw.listing()) == batch + 40, "bans missing from the kernel"

        # Restart: the kernel holds reconcile_n bans (1% of them stale), a new object reconciles
        # the store's reconcile_n (1% of them new).
        fw.flush()
        nets = v4(0x0C000000, reconcile_n)
        fw.ban(bans_for(nets))
        keep = nets[reconcile_n // 100:]
        live = bans_for(keep + v4(0x0D000000, reconcile_n // 100))
        fw2 = make_firewall(cfg, netns=ns.name)
        t = timed(lambda: fw2.reconcile(live, time.time()))
        print(f"{backend:9} reconcile {reconcile_n:,} live bans after restart: {ms(t)}")
        got = fw2.listing()
        assert len(got) == len(live), f"{len(got)} in kernel, {len(live)} wanted"
        t = timed(lambda: fw2.reconcile(live, time.time()))
        print(f"{backend:9} reconcile again, nothing to change:  {ms(t)}")
        med, worst = single_bans(fw2, 0x0A200000)
        print(f"{backend:9} 1 ban, {reconcile_n:,} present:       median {ms(med)}, "
              f"worst {ms(worst)}")
        fw2.flush()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def bench_engine(n: int) -> None:
    """RSS growth of the engine tracking n distinct offender IPs (none reaches a ban)."""
    try:
        from logwatch.engine.core import Engine
        from logwatch.parsing.events import Event
    except ImportError as exc:
        print(f"engine    not available yet ({exc}); memory figure skipped")
        return
    now = [1_700_000_000.0]
    engine = Engine(relay=RelayConfig(), bans=BanConfig(max_tracked=max(n, 1)),
                    clock=lambda: now[0])
    stamp = datetime.fromtimestamp(now[0], UTC)
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    base = 0x0B000000
    for i in range(n):
        now[0] += 0.0001
        engine.handle(Event(time=stamp, kind="user-unknown", ip=str(ipaddress.IPv4Address(base + i)),
                            user=f"u{i % 7}", service="smtp", program="postfix/smtpd",
                            rule="bench", host=None))
    elapsed = time.perf_counter() - t0
    gc.collect()
    grown = rss() - before
    tracked = len(getattr(engine, "_tracked", ())) or "?"
    print(f"engine    {n:,} distinct offenders (tracked: {tracked}): RSS +{grown / 2**20:.0f} MB, "
          f"{n / elapsed:,.0f} events/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="iptables,ipset,nftables")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--reconcile", type=int, default=100_000)
    ap.add_argument("--iptables-reconcile", type=int, default=100_000)
    ap.add_argument("--offenders", type=int, default=1_000_000)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_only:
        bench_engine(args.offenders)
        return
    for backend in args.backends.split(","):
        n = args.iptables_reconcile if backend == "iptables" else args.reconcile
        bench_backend(backend, args.batch, n)
    if not args.skip_engine:
        # A fresh process, so the firewall runs above do not blur the RSS figure.
        subprocess.run([sys.executable, __file__, "--engine-only", "--offenders",
                        str(args.offenders)], check=True)


if __name__ == "__main__":
    main()
