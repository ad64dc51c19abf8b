#!/usr/bin/env python3
"""Cost of the periodic firewall drift check and of a repair after a hand-deleted chain/set/
table, per backend, at N live bans; prints the figures.

Runs as root inside a network namespace it creates and deletes. Usage:
  .venv/bin/python bench/fwdrift_bench.py [--bans 100000] [--backends iptables,ipset,nftables]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from netns import netns  # noqa: E402

from logwatch.daemon.config import FirewallConfig  # noqa: E402
from logwatch.effectors.firewall import drift, make_firewall  # noqa: E402
from logwatch.engine.model import Ban  # noqa: E402

REMOVE = {
    "iptables": [["iptables", "-D", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "25", "-j",
                  "SPAM_UNAME_GUESSERS"], ["iptables", "-F", "SPAM_UNAME_GUESSERS"],
                 ["iptables", "-X", "SPAM_UNAME_GUESSERS"]],
    "ipset": [["iptables", "-D", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "25", "-m", "set",
               "--match-set", "logwatchd4", "src", "-j", "DROP"],
              ["ipset", "destroy", "logwatchd4"]],
    "nftables": [["nft", "delete", "table", "inet", "logwatchd"]],
}


def bench(backend: str, n: int) -> None:
    now = time.time()
    bans = [Ban(f"{ipaddress.IPv4Address(0x0B000000 + i)}/32", now, now + 7200) for i in range(n)]
    with netns("lwb") as ns:
        fw = make_firewall(FirewallConfig(backend=backend), netns=ns.name)
        fw.setup()
        fw.reconcile(bans, time.time())
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = drift(fw, bans, time.time())
            times.append(time.perf_counter() - t0)
        assert found == [], found
        for argv in REMOVE[backend]:
            ns.run(argv)
        t0 = time.perf_counter()
        found = drift(fw, bans, time.time())
        fw.setup()
        fw.reconcile(bans, time.time())
        repair = time.perf_counter() - t0
        assert found and drift(fw, bans, time.time()) == []
    print(f"{backend:9} {n:>7,} bans: check (in sync) median {statistics.median(times):.3f} s, "
          f"detect + repair of a deleted object {repair:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bans", type=int, default=100_000)
    ap.add_argument("--backends", default="iptables,ipset,nftables")
    args = ap.parse_args()
    for backend in args.backends.split(","):
        bench(backend, args.bans)


if __name__ == "__main__":
    main()
