"""Relay map benchmark: grant latency, expiry sweep and full rebuild at 100,000 live grants.

Usage: .venv/bin/python bench/relay_bench.py [--entries 100000] [--samples 200] [--types hash,lmdb]
Prints one block of figures per map type (real postmap, temp directory, nothing left behind).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstats import ms  # noqa: E402

from logwatch.effectors.relaymap import RelayMap, open_relay_map  # noqa: E402


def ip_of(n: int, first: int = 10) -> str:
    return f"{first}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def query(cfdir: str, spec: str, key: str) -> str:
    return subprocess.run(["postmap", "-c", cfdir, "-q", key, spec], capture_output=True,
                          text=True, check=False).stdout.strip()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_type(kind: str, entries: int, samples: int, top: str, cfdir: str) -> None:
    spec = f"{kind}:{top}/{kind}/pop-before-smtp"
    os.mkdir(f"{top}/{kind}")
    rmap = open_relay_map(spec, postfix_config_dir=cfdir)
    live = [ip_of(i) for i in range(entries)]

    rebuilds = [timed(lambda: rmap.rebuild(live)) for _ in range(3)]
    size = os.path.getsize(rmap.spec.file)
    print(f"[{kind}] full rebuild of {entries:,} entries: median "
          f"{statistics.median(rebuilds):.3f} s  (runs: "
          f"{', '.join(f'{r:.3f}' for r in rebuilds)}; file {size / 1e6:.1f} MB)")

    checks = [timed(rmap.check) for _ in range(3)]
    print(f"[{kind}] check() of {entries:,} entries:       median "
          f"{statistics.median(checks) * 1000:.1f} ms")

    add_only: list[float] = []
    visible: list[float] = []
    for n in range(samples):
        ip = ip_of(n, first=11)
        t0 = time.perf_counter()
        rmap.add([ip])
        t1 = time.perf_counter()
        while query(cfdir, spec, ip) != "OK":
            pass
        t2 = time.perf_counter()
        add_only.append(t1 - t0)
        visible.append(t2 - t0)
    print(f"[{kind}] add([ip]) returns:                   {ms(add_only)}")
    print(f"[{kind}] add([ip]) -> postmap -q answers OK:  {ms(visible)}")

    revoked = [ip_of(n, first=11) for n in range(samples)]
    removes = [timed(lambda ip=ip: rmap.remove([ip])) for ip in revoked]
    print(f"[{kind}] remove([ip]) (one revoke):           {ms(removes)}")

    sweeps = []
    for r in range(5):
        batch = [ip_of(r * 1000 + i) for i in range(1000)]
        sweeps.append(timed(lambda batch=batch: rmap.remove(batch)))
        rmap.add(batch)
    print(f"[{kind}] expiry sweep, remove() of 1,000 IPs:  median "
          f"{statistics.median(sweeps) * 1000:.1f} ms  (runs: "
          f"{', '.join(f'{s * 1000:.1f}' for s in sweeps)} ms)")

    text = f"{top}/{kind}/pop-before-smtp.txt"
    with_text = open_relay_map(spec, postfix_config_dir=cfdir, text_file=text)
    with_text.rebuild(live)
    text_adds = [timed(lambda n=n: with_text.add([ip_of(n, first=12)]))
                 for n in range(min(samples, 50))]
    print(f"[{kind}] add([ip]) with text_file at {entries:,}:  {ms(text_adds)}")

    if kind == "hash":
        bench_copy_rename(rmap, cfdir, min(samples, 50))
    print(f"[{kind}] live entries at the end: {len(live):,}+ (map file {size / 1e6:.1f} MB)")


def bench_copy_rename(rmap: RelayMap, cfdir: str, samples: int) -> None:
    """The rejected alternative: copy the .db, postmap -i the copy, rename it over the map."""
    src = rmap.spec.file
    base = rmap.spec.path
    times = []
    for n in range(samples):
        t0 = time.perf_counter()
        shutil.copyfile(src, base + ".new.db")
        subprocess.run(["postmap", "-c", cfdir, "-i", f"hash:{base}.new"],
                       input=f"{ip_of(n, first=13)} OK\n", text=True, check=True)
        os.replace(base + ".new.db", src)
        times.append(time.perf_counter() - t0)
    print(f"[hash] alternative copy+postmap -i+rename:   {ms(times)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--types", default="hash,lmdb")
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="relay-bench-")
    try:
        cfdir = f"{top}/etc"
        os.mkdir(cfdir)
        Path(cfdir, "main.cf").write_text("compatibility_level = 3.6\n")
        # Postfix waits until a just-written main.cf is a second old; a real one is older.
        os.utime(f"{cfdir}/main.cf", (time.time() - 60, time.time() - 60))
        print(f"relay map benchmark: {args.entries:,} live grants, {args.samples} samples, "
              f"{os.cpu_count()} CPUs")
        for kind in args.types.split(","):
            bench_type(kind, args.entries, args.samples, top, cfdir)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
