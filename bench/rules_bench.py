#!/usr/bin/env python3
"""Worst case per rule: CPU time of each rule's regex on its slowest 100 KB hostile line made of
its own literals (logwatch.parsing.rulecheck.hostile_specs: every sample and fixture message cut at each
field boundary and filled with the pattern's words, the sample's fields and syntax tokens, with
and without the rest of the line), best of 3. Prints the slowest rules and the worst figure.

    .venv/bin/python bench/rules_bench.py [--size 100000] [--top 10] [--rules DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logwatch.parsing.rulecheck import hostile_specs, sample_message, worst_hostile  # noqa: E402
from logwatch.parsing.rules import default_rules_dirs, load_ruleset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000, help="hostile line length (characters)")
    ap.add_argument("--top", type=int, default=10, help="how many of the slowest rules to show")
    ap.add_argument("--rules", action="append", help="rules directory (default: the shipped ones)")
    args = ap.parse_args()
    started = time.process_time()
    ruleset = load_ruleset(args.rules or default_rules_dirs())
    load = time.process_time() - started
    rows, lines = [], 0
    for rule in ruleset.rules:
        seeds = [m for s in rule.samples if s.expect is not None
                 for m in [sample_message(rule, s)] if m][:3]
        lines += len(hostile_specs(rule, seeds))
        took, line = worst_hostile(rule, seeds, args.size, finalists=8, budget=0.0)
        rows.append((took, rule.id, line))
    rows.sort(reverse=True)
    print(f"Python {sys.version.split()[0]}; {len(ruleset)} rules; {lines:,} hostile line shapes; "
          f"rules loaded and self-tested in {load:.2f} s CPU")
    print(f"slowest rules on a {args.size:,}-character hostile line of their own literals "
          f"(CPU, best of 3):")
    for took, rule_id, line in rows[:args.top]:
        print(f"  {took * 1000:8.2f} ms  {rule_id:34}  {line[:50]!r}")
    took, rule_id, _line = rows[0]
    print(f"worst rule: {rule_id} {took * 1000:.2f} ms per {args.size // 1000} KB line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
