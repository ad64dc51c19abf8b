#!/usr/bin/env python3
"""Catching up on an old log: the real `logwatchd --stdin --dry-run` reading bench/maillog.py's
log (default 1,000,000 lines, seed 1) until it exits at the end of its input.

Prints lines/s of wall time (process start to exit, best of --runs) and the process's CPU time,
for the log as a regular file on stdin (`logwatchd --stdin < big.log`) and through a pipe
(`cat big.log | logwatchd --stdin`), and the fixed cost of a start and stop on empty input.
Target: >= 500,000 lines/s. Dry run, firewall backend none, relay map and state in a temp dir;
the daemon's log goes to a file there. Usage:
    .venv/bin/python bench/catchup_bench.py [--lines N] [--runs 3] [--profile OUT.prof]
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

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from maillog import generate  # noqa: E402


def write_config(base: Path) -> Path:
    settings = {
        "sources": {"logfiles": []},
        "rules": {"dirs": [str(REPO / "rules")], "local_dir": None},
        "relay": {"map": f"hash:{base / 'relay'}", "mynetworks": []},
        # bench/maillog.py's log ends about now and spans ~14 h: a week's bantime keeps its
        # guessers' bans live, so the catch-up does the ban work too.
        "bans": {"whitelist": None, "bantime": "7d"},
        "firewall": {"backend": "none"},
        "watchdog": {"enabled": False},
        "daemon": {"state_dir": str(base / "state"), "socket": str(base / "control.sock"),
                   "log": "stderr", "actions_log": str(base / "actions.log")},
    }
    path = base / "logwatchd.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_once(argv: list[str], log: Path, piped: bool, base: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the daemon, its log) of one run on a fresh state."""
    shutil.rmtree(base / "state", ignore_errors=True)
    (base / "actions.log").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "rb") as source, open(base / "daemon.log", "wb") as err:
        writer = (subprocess.Popen(["cat", str(log)], stdout=subprocess.PIPE) if piped else None)
        stdin = writer.stdout if writer is not None else source
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=err, stderr=err, env=env, cwd=base)
        if writer is not None:
            writer.stdout.close()        # the daemon holds the read end now
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if writer is not None:
            writer.wait()
    text = (base / "daemon.log").read_text(errors="replace")
    if proc.returncode != 0 or "action=stop reason=end-of-input" not in text:
        raise SystemExit(f"logwatchd failed ({proc.returncode}):\n{text[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", metavar="OUT", help="also run once under cProfile into OUT")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lwd-catchup-") as tmp:
        base = Path(tmp)
        log, empty = base / "big.log", base / "empty.log"
        data = generate(args.lines, seed=args.seed)
        log.write_bytes(data)
        empty.write_bytes(b"")
        config = write_config(base)
        argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(config), "--stdin",
                "--dry-run"]
        print(f"log: {args.lines:,} lines, {len(data) / 1e6:.1f} MB, seed {args.seed}; "
              f"logwatchd --stdin --dry-run until the end of input, best of {args.runs}")
        start_stop = min(run_once(argv, empty, False, base)[0] for _ in range(args.runs))
        print(f"{'start and stop, empty input:':<34} {start_stop:.2f} s wall")
        for label, piped in (("regular file on stdin:", False), ("pipe (cat | logwatchd):", True)):
            runs = [run_once(argv, log, piped, base) for _ in range(args.runs)]
            wall, cpu, text = min(runs)
            lines = re.search(r"action=eof source=stdin lines=(\d+)", text)
            bans = text.count("action=ban ")
            print(f"{label:<34} {args.lines / wall:>10,.0f} lines/s ({wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU; {lines.group(1) if lines else '?'} lines, {bans} bans)")
        if args.profile:
            prof = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve()),
                    *argv[1:]]
            run_once(prof, log, False, base)
            print(f"profile of the regular-file run: {args.profile} (python -m pstats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
