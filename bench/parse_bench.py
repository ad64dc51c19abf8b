#!/usr/bin/env python3
"""Parser throughput on a generated 1,000,000-line mail log, with two yardsticks.

The log is fed to the parser in chunks of at most 4 MiB of whole lines, as the tailer delivers
it. Prints lines/s (CPU time of one core, best of --runs) for the full default rule set with
each literal matcher (hyperscan when installed, and CPython's re), then for a one-regex
Python loop and `grep -cE` with the same regex; then checks, for each matcher, that the fast
path classified every line exactly as the slow reference path does.
"""

from __future__ import annotations

import argparse
import gc
import re
import subprocess
import sys
import tempfile
import time
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maillog import generate  # noqa: E402

from logwatch.parsing.literalscan import hyperscan_available  # noqa: E402
from logwatch.parsing.parser import Parser  # noqa: E402
from logwatch.parsing.rules import default_rules_dirs, load_ruleset  # noqa: E402
from logwatch.sources.tail import READ_MAX  # noqa: E402

# One representative rule (Postfix "User unknown"), as a Python regex and as POSIX ERE for grep.
PY_REGEX = (rb"NOQUEUE: reject: RCPT from [^\[\]\s]*\[([0-9A-Fa-f.:]+)\]: 550 5\.1\.1 <[^>]*>: "
            rb"Recipient address rejected: User unknown")
ERE_REGEX = (r"NOQUEUE: reject: RCPT from [^][:space:][]*\[[0-9A-Fa-f.:]+\]: 550 5\.1\.1 <[^>]*>: "
             r"Recipient address rejected: User unknown")
NOW = 1795000000.0   # a fixed clock keeps syslog years (and so the events) reproducible


def split_chunks(data: bytes, size: int) -> list[bytes]:
    """`data` cut after a newline into pieces of at most `size` bytes (whole lines)."""
    chunks, pos = [], 0
    while pos < len(data):
        end = len(data) if pos + size >= len(data) else data.rfind(b"\n", pos, pos + size) + 1
        if end <= pos:                          # a line longer than size: cut after it
            end = data.find(b"\n", pos) + 1 or len(data)
        chunks.append(data[pos:end])
        pos = end
    return chunks


def best_cpu(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()                # start each run from the same heap
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-verify", action="store_true", help="skip the slow-path comparison")
    args = ap.parse_args()

    data = generate(args.lines, seed=args.seed)
    ruleset = load_ruleset(default_rules_dirs())
    chunks = split_chunks(data, READ_MAX)
    firsts = list(accumulate((chunk.count(b"\n") for chunk in chunks[:-1]), initial=1))
    print(f"log: {args.lines:,} lines, {len(data) / 1e6:.1f} MB, seed {args.seed}; "
          f"{len(ruleset)} rules; fed in {len(chunks)} chunks of at most {READ_MAX >> 20} MiB")

    matchers = ["hyperscan", "re"] if hyperscan_available() else ["re"]
    if not hyperscan_available():
        print("hyperscan matcher: not installed (pip install hyperscan): only the re matcher runs")
    result: list = []
    for matcher in matchers:
        def fast(matcher: str = matcher) -> None:
            parser = Parser(ruleset, clock=lambda: NOW, matcher=matcher)
            events = 0
            for chunk, first in zip(chunks, firsts, strict=True):
                events += len(parser.parse(chunk, first))   # handed on and dropped, as the daemon does
            result[:] = [events, parser.stats, parser.matcher.passes]

        seconds = best_cpu(fast, args.runs)
        events, stats, passes = result
        label = f"logwatchd parser, {matcher} matcher:"
        print(f"{label:<34} {args.lines / seconds:>12,.0f} lines/s ({seconds:.3f} s CPU, "
              f"{events:,} events, {stats.candidates:,} candidate lines, {passes} scan "
              f"pass{'es' if passes > 1 else ''})")

    regex = re.compile(PY_REGEX)

    def one_regex_loop() -> None:
        hits = 0
        for line in data.splitlines():
            if regex.search(line):
                hits += 1
        result[:] = [hits]

    seconds = best_cpu(one_regex_loop, args.runs)
    print(f"{'one-regex Python loop:':<34} {args.lines / seconds:>12,.0f} lines/s "
          f"({seconds:.3f} s CPU, {result[0]:,} matches)")

    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        log.write(data)
        log.flush()
        best = float("inf")
        for _ in range(args.runs):
            started = time.perf_counter()
            out = subprocess.run(["grep", "-cE", ERE_REGEX, log.name], capture_output=True,
                                 text=True, check=False)
            best = min(best, time.perf_counter() - started)
        print(f"{'grep -cE (one regex):':<34} {args.lines / best:>12,.0f} lines/s "
              f"({best:.3f} s wall, {out.stdout.strip()} matches)")

    if not args.no_verify:
        reference = Parser(ruleset, clock=lambda: NOW)
        slow = []
        for number, line in enumerate(data.split(b"\n")[:-1], 1):
            event = reference.parse_line(line, number)
            if event is not None:
                slow.append(event)
        for matcher in matchers:
            parser = Parser(ruleset, clock=lambda: NOW, matcher=matcher)
            fast_events = [event for chunk, first in zip(chunks, firsts, strict=True)
                           for event in parser.parse(chunk, first)]
            same = fast_events == slow
            print(f"fast path ({matcher}) == slow reference path on every line: "
                  f"{'yes' if same else 'NO'} ({len(slow):,} events)")
            if not same:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
