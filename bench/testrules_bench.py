#!/usr/bin/env python3
"""`logwatchctl test-rules` end to end (a real process, wall time) next to fail2ban-regex.

Writes bench/maillog.py's log (default 1,000,000 lines, seed 1) to a temporary file, then runs
`logwatchctl test-rules --matcher hyperscan|re FILE` (best wall time of --runs, process start to
exit: interpreter, rules, reading, parsing, diagnostics, report; with its CPU time, which
says more on a busy machine) and Debian's `fail2ban-regex
FILE /etc/fail2ban/filter.d/postfix.conf` (one filter; --f2b-runs, default 1: it is slow) on
the same file, and prints lines/s for each. Targets: >= 1,000,000 lines/s with hyperscan,
>= 400,000 with re. Needs `apt-get install fail2ban` for the yardstick (skipped without it).
    .venv/bin/python bench/testrules_bench.py [--lines N] [--runs 3] [--f2b-runs 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from maillog import generate  # noqa: E402

from logwatch.parsing.literalscan import hyperscan_available  # noqa: E402

F2B_FILTER = "/etc/fail2ban/filter.d/postfix.conf"


def logwatchctl() -> list[str]:
    """The logwatchctl of this interpreter's environment, else the module from this tree."""
    exe = shutil.which("logwatchctl", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "logwatch.cli.ctl"]


def best_wall(argv: list[str], runs: int) -> tuple[float, float, str]:
    """Best wall time of `runs` runs of argv, that run's CPU time (user + system), its output."""
    best: tuple[float, float, str] = (float("inf"), 0.0, "")
    for _ in range(runs):
        with tempfile.TemporaryFile() as out:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
            _pid, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{text[-3000:]}")
        best = min(best, (elapsed, usage.ru_utime + usage.ru_stime, text))
    return best


def field(text: str, pattern: str) -> str:
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--f2b-runs", type=int, default=1)
    args = ap.parse_args()

    data = generate(args.lines, seed=args.seed)
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        log.write(data)
        log.flush()
        print(f"log: {args.lines:,} lines, {len(data) / 1e6:.1f} MB, seed {args.seed}; "
              f"wall time of a whole process, best of {args.runs} (fail2ban-regex: "
              f"{args.f2b_runs})")
        matchers = ["hyperscan", "re"] if hyperscan_available() else ["re"]
        for matcher in matchers:
            seconds, cpu, out = best_wall([*logwatchctl(), "test-rules", "--matcher", matcher,
                                           log.name], args.runs)
            label = f"logwatchctl test-rules, {matcher}:"
            events = field(out, r"^Events: +(\d+)")
            unframed = field(out, r"^Lines not understood.*: (\d+)")
            suspects = field(out, r"^Unmatched lines that look like failures: (\d+)")
            parse = field(out, r"^Parse time: +([\d.]+ s CPU)")
            print(f"{label:<36} {args.lines / seconds:>10,.0f} lines/s ({seconds:.2f} s wall, "
                  f"{cpu:.2f} s CPU; {events} events, {unframed} unframed, {suspects} failure-looking; "
                  f"parse {parse})")
        if not hyperscan_available():
            print("hyperscan: not installed (pip install hyperscan): re matcher only")
        f2b = shutil.which("fail2ban-regex")
        if f2b is None or not Path(F2B_FILTER).exists():
            print("fail2ban-regex: not installed (apt-get install fail2ban): no yardstick")
            return 0
        seconds, cpu, out = best_wall([f2b, log.name, F2B_FILTER], args.f2b_runs)
        label = "fail2ban-regex, postfix filter:"
        matched = field(out, r"^Lines: .*?(\d+) matched")
        print(f"{label:<36} {args.lines / seconds:>10,.0f} lines/s ({seconds:.2f} s wall, "
              f"{cpu:.2f} s CPU; {matched} matched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
