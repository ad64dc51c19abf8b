"""State faults benchmark: how long the store resync after a failed commit (disk full) holds
the loop at a given state size, and how fast hostile config files are refused.

Usage: .venv/bin/python bench/state_bench.py [--grants 100000] [--bans 10000]
       [--offenders 1000000] [--batch 1000]
Prints the figures; works in a temp directory and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch.daemon.config import ConfigError, load_config  # noqa: E402
from logwatch.engine.model import Ban, Grant  # noqa: E402
from logwatch.state.pending import PendingWrites  # noqa: E402
from logwatch.state.store import Store  # noqa: E402


def ip_of(n: int, first: int = 10) -> str:
    return f"{first}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def resync_seconds(base: Path, grants: int, bans: int, offenders: int,
                   batch: int) -> tuple[float, float]:
    """(seconds of a full rewrite of the state, seconds of the resync the daemon does: the
    pending writes of `batch` new grants and bans merged while the disk was full)."""
    store = Store(base / "state.db")
    try:
        g = [Grant(ip_of(i), "user", "imap", 0.0, 4e9) for i in range(grants)]
        b = [Ban(f"{ip_of(i, 11)}/32", 0.0, 4e9, 5.0, {"user-unknown": 5}) for i in range(bans)]
        o = [(f"{ip_of(i, 12)}/32", 1, 0.0) for i in range(offenders)]
        start = time.perf_counter()
        store.replace_state(g, b, o)
        full = time.perf_counter() - start
        pending = PendingWrites()
        for i in range(batch):          # one batch per failed commit, merged
            ban = Ban(f"{ip_of(i, 13)}/32", 1.0, 4e9, 5.0, {"user-unknown": 5})
            pending.merge({ip_of(i, 14): Grant(ip_of(i, 14), "u", "imap", 1.0, 4e9)}, (),
                          {ban.net: ban}, ())
        start = time.perf_counter()
        with store.transaction():
            pending.write(store, lambda nets: [(n, 1, 1.0) for n in nets])
        return full, time.perf_counter() - start
    finally:
        store.close()


def refuse_seconds(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        load_config(str(path))
        outcome = "accepted"
    except ConfigError as exc:
        outcome = str(exc).split(": ", 2)[-1][:60]
    return time.perf_counter() - start, outcome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grants", type=int, default=100_000)
    ap.add_argument("--bans", type=int, default=10_000)
    ap.add_argument("--offenders", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000,
                    help="grants and bans decided while the disk was full")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lw-state-bench-"))
    try:
        full, resync = resync_seconds(base, args.grants, args.bans, args.offenders, args.batch)
        print(f"state of {args.grants} grants, {args.bans} bans, {args.offenders} offenders: "
              f"full rewrite {full:.2f} s; resync of {args.batch} grants + {args.batch} bans "
              f"decided while the disk was full: {resync * 1000:.1f} ms")
        levels = ['  a0: &a0 [' + ",".join(['"lol"'] * 9) + "]"]
        levels += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
        bomb = base / "bomb.yaml"
        bomb.write_text("relay:\n" + "\n".join(levels) + "\n  grace: *a8\n")
        fifo = base / "fifo.yaml"
        os.mkfifo(fifo)
        for name, path in (("alias bomb", bomb), ("FIFO", fifo), ("/dev/zero", Path("/dev/zero"))):
            seconds, outcome = refuse_seconds(path)
            print(f"config {name} ({path.stat().st_size} bytes): {seconds * 1000:.1f} ms, "
                  f"{outcome}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
