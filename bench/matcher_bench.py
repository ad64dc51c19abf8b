#!/usr/bin/env python3
"""Why hyperscan: time to find every prefilter literal of the shipped rules in the generated
1,000,000-line log with each multi-literal matcher that is installed (CPU time, best of --runs).

Only hyperscan is a dependency (optional); to see the others, install them into a scratch venv:
pip install google-re2 ahocorasick-rs pyahocorasick. Missing ones are reported as such.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maillog import generate  # noqa: E402

from logwatch.parsing.literalscan import PivotMatcher, hyperscan_available, make_matcher  # noqa: E402
from logwatch.parsing.rules import default_rules_dirs, load_ruleset  # noqa: E402


def best_cpu(fn: Callable[[], int], runs: int) -> tuple[float, int]:
    best, found = float("inf"), 0
    for _ in range(runs):
        started = time.process_time()
        found = fn()
        best = min(best, time.process_time() - started)
    return best, found


def contenders(literals: list[bytes], data: bytes) -> dict[str, Callable[[], int] | str]:
    """name -> a function returning how many literal occurrences (or lines) it found."""
    out: dict[str, Callable[[], int] | str] = {}
    if hyperscan_available():
        hs = make_matcher(literals, "hyperscan")
        out["hyperscan (logwatchd's matcher, lines)"] = lambda: len(hs.candidates(data)[0])
    else:
        out["hyperscan"] = "not installed"
    pivot = PivotMatcher(literals)
    pivot.candidates(data)          # plan on the log, as the parser does
    out[f"re, pivot passes ({pivot.passes}; lines, before the `in` check)"] = (
        lambda: len(pivot.candidates(data)[0]))
    try:
        import re2  # google-re2
        alternation = re2.compile(b"|".join(re.escape(lit) for lit in literals))
        out["google-re2, one alternation"] = lambda: sum(1 for _ in alternation.finditer(data))
    except ImportError:
        out["google-re2"] = "not installed"
    try:
        import ahocorasick_rs
        automaton = ahocorasick_rs.BytesAhoCorasick(literals)
        out["ahocorasick-rs"] = lambda: len(automaton.find_matches_as_indexes(data))
    except ImportError:
        out["ahocorasick-rs"] = "not installed"
    try:
        import ahocorasick  # pyahocorasick
        trie = ahocorasick.Automaton()
        for i, lit in enumerate(literals):
            trie.add_word(lit.decode("latin-1"), i)
        trie.make_automaton()
        text = data.decode("latin-1")
        out["pyahocorasick (on str)"] = lambda: sum(1 for _ in trie.iter(text))
    except ImportError:
        out["pyahocorasick"] = "not installed"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data = generate(args.lines, seed=1)
    literals = list(load_ruleset(default_rules_dirs()).literals)
    print(f"{len(literals)} literals, {len(data) / 1e6:.1f} MB ({args.lines:,} lines)")
    for name, fn in contenders(literals, data).items():
        if isinstance(fn, str):
            print(f"  {name:<55} {fn}")
            continue
        seconds, found = best_cpu(fn, args.runs)
        print(f"  {name:<55} {seconds * 1000:8.1f} ms  ({found:,} found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
