#!/usr/bin/env python3
"""Parser throughput on a generated 1,000,000-line mail log, with two yardsticks.

Prints lines/s of the full default rule set (CPU time of one core, best of --runs), of a
one-regex Python loop, and of `grep -cE` with the same regex; then checks that the fast path
classified every line exactly as the slow reference path does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maillog import generate  # noqa: E402

from logwatch.parser import Parser  # noqa: E402
from logwatch.rules import default_rules_dirs, load_ruleset  # noqa: E402

# One representative rule (Postfix "User unknown"), as a Python regex and as POSIX ERE for grep.
PY_REGEX = (rb"NOQUEUE: reject: RCPT from [^\[\]\s]*\[([0-9A-Fa-f.:]+)\]: 550 5\.1\.1 <[^>]*>: "
            rb"Recipient address rejected: User unknown")
ERE_REGEX = (r"NOQUEUE: reject: RCPT from [^][:space:][]*\[[0-9A-Fa-f.:]+\]: 550 5\.1\.1 <[^>]*>: "
             r"Recipient address rejected: User unknown")
NOW = 1795000000.0   # a fixed clock keeps syslog years (and so the events) reproducible


def best_cpu(fn, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-verify", action="store_true", help="skip the slow-path comparison")
    args = ap.parse_args()

    data = generate(args.lines, seed=args.seed)
    ruleset = load_ruleset(default_rules_dirs())
    print(f"log: {args.lines:,} lines, {len(data) / 1e6:.1f} MB, seed {args.seed}; "
          f"{len(ruleset)} rules")

    result: list = []

    def fast() -> None:
        parser = Parser(ruleset, clock=lambda: NOW)
        result[:] = [parser.parse(data), parser.stats, len(parser.scans)]

    seconds = best_cpu(fast, args.runs)
    events, stats, scans = result
    print(f"logwatchd parser (all rules): {args.lines / seconds:>12,.0f} lines/s "
          f"({seconds:.3f} s CPU, {len(events):,} events, {stats.candidates:,} candidate lines, "
          f"{scans} scan passes)")

    regex = re.compile(PY_REGEX)

    def one_regex_loop() -> None:
        hits = 0
        for line in data.splitlines():
            if regex.search(line):
                hits += 1
        result[:] = [hits]

    seconds = best_cpu(one_regex_loop, args.runs)
    print(f"one-regex Python loop:        {args.lines / seconds:>12,.0f} lines/s "
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
        print(f"grep -cE (one regex):         {args.lines / best:>12,.0f} lines/s "
              f"({best:.3f} s wall, {out.stdout.strip()} matches)")

    if not args.no_verify:
        parser = Parser(ruleset, clock=lambda: NOW)
        slow = []
        for number, line in enumerate(data.split(b"\n")[:-1], 1):
            event = parser.parse_line(line, number)
            if event is not None:
                slow.append(event)
        same = slow == events
        print(f"fast path == slow reference path on every line: {'yes' if same else 'NO'} "
              f"({len(slow):,} events)")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
