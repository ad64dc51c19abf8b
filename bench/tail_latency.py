#!/usr/bin/env python3
"""Latency of the file tailer: from a writer's write() to the parsed event.

A writer process appends Postfix "User unknown" lines at a fixed rate to a file in a temporary
directory; this process runs the FileTailer in a selectors loop like the daemon's and feeds
each chunk to logwatch.parsing.parser.Parser with the default rules (or, if the parser cannot be
imported, just splits the chunk into lines; the output says which). Each line carries the
CLOCK_MONOTONIC time of its write(); latency = time the chunk's parse returned - that time.

Prints, per rate: lines written/delivered/events, p50/p99/max latency, and the CPU time this
process (tailer + parser) used, with the parser's share.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logwatch.sources import FileTailer  # noqa: E402

WRITER = r"""
import os, sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
n = int(rate * seconds)
step = 1e9 / rate
clock = time.clock_gettime_ns
MONO = time.CLOCK_MONOTONIC
start = clock(MONO) + 50_000_000
for i in range(n):
    due = start + int(i * step)
    now = clock(MONO)
    if due - now > 100_000:
        time.sleep((due - now) / 1e9)
    ts = clock(MONO)
    os.write(fd, b"Nov 21 12:00:00 mx1 postfix/smtpd[4242]: NOQUEUE: reject: RCPT from "
                 b"unknown[192.0.2.%d]: 550 5.1.1 <u%d@example.org>: Recipient address "
                 b"rejected: User unknown in local recipient table; from=<a@b.example> "
                 b"to=<u%d@example.org> proto=ESMTP helo=<x>\n" % (i % 250 + 1, ts, ts))
os.close(fd)
"""


def make_parse():
    """The real parser with the default rules, or a line splitter if it is unavailable."""
    try:
        from logwatch.parsing.parser import Parser
        from logwatch.parsing.rules import default_rules_dirs, load_ruleset
        parser = Parser(load_ruleset(default_rules_dirs()))
        return parser.parse, "logwatch.parsing.parser.Parser (default rules)"
    except Exception as exc:   # the bench still measures the tailer alone
        return (lambda chunk: chunk.split(b"\n")[:-1]), f"line split only (no parser: {exc})"


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def run(rate: float, seconds: float, polling: bool) -> dict[str, float | str]:
    parse, what = make_parse()
    with tempfile.TemporaryDirectory(prefix="tail-bench-") as d:
        path = os.path.join(d, "mail.log")
        open(path, "wb").close()
        received: list[tuple[int, bytes]] = []
        events = 0
        parse_cpu = 0.0

        def on_chunk(name: str, chunk: bytes) -> None:
            nonlocal events, parse_cpu
            c0 = time.process_time()
            events += len(parse(chunk))
            parse_cpu += time.process_time() - c0
            received.append((time.clock_gettime_ns(time.CLOCK_MONOTONIC), chunk))

        tailer = FileTailer([path], on_chunk=on_chunk, force_polling=polling,
                            poll_interval=1.0)
        tailer.process()
        sel = selectors.DefaultSelector()
        fd = tailer.fileno()
        if fd is not None:
            sel.register(fd, selectors.EVENT_READ)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(rate), str(seconds)])
        total = int(rate * seconds)
        next_poll = time.monotonic() + tailer.poll_interval
        try:
            deadline = time.monotonic() + seconds + 30
            delivered = 0
            while time.monotonic() < deadline:
                if fd is not None:
                    if sel.select(0.5):
                        tailer.process()
                else:
                    time.sleep(max(0.0, next_poll - time.monotonic()))
                    next_poll += tailer.poll_interval
                    tailer.process()
                delivered = tailer.stats()[path]["lines"]
                if writer.poll() is not None and delivered >= total:
                    break
        finally:
            if writer.poll() is None:
                writer.kill()
            writer.wait()
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            sel.close()
            tailer.close()
    lat: list[float] = []
    for t, chunk in received:
        for line in chunk.split(b"\n")[:-1]:
            start = line.index(b"<u") + 2
            ts = int(line[start:line.index(b"@", start)])
            lat.append((t - ts) / 1e6)
    lat.sort()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"rate": rate, "seconds": seconds, "written": total, "delivered": len(lat),
            "events": events, "p50": pct(lat, 50), "p99": pct(lat, 99),
            "max": lat[-1] if lat else float("nan"), "cpu": cpu, "parse_cpu": parse_cpu,
            "what": what, "chunks": len(received)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,20000", help="lines/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each rate")
    ap.add_argument("--polling", action="store_true", help="force the polling fallback")
    args = ap.parse_args()
    print(f"mode: {'polling' if args.polling else 'inotify'}; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs")
    for rate in (float(r) for r in args.rates.split(",")):
        r = run(rate, args.seconds, args.polling)
        print(f"consumer: {r['what']}")
        print(f"rate {r['rate']:>8.0f} lines/s for {r['seconds']:.0f} s: written {r['written']}, "
              f"delivered {r['delivered']}, events {r['events']}, chunks {r['chunks']}")
        print(f"  latency write()->parsed: p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
              f"max {r['max']:.2f} ms")
        print(f"  CPU of tailer+parser: {r['cpu']:.3f} s ({100 * r['cpu'] / r['seconds']:.1f}% "
              f"of one core), of which parser {r['parse_cpu']:.3f} s")


if __name__ == "__main__":
    main()
