"""Time Watchdog.scan() over ~2,000 extra processes, a few hundred titled as stuck sendmail sessions.

Run as: PYTHONPATH=. .venv/bin/python bench/watchdog_bench.py [--procs 2000] [--matching 300]
Prints the median scan time over several runs.  Every spawned process is killed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logwatch.daemon.config import WatchdogConfig  # noqa: E402
from logwatch.effectors.watchdog import Watchdog  # noqa: E402

SLEEP = "/bin/sleep"
OTHER_TITLES = (
    "sleep", "vim cmd read notes", "sendmail: MTA: accepting connections",
    "/usr/sbin/dovecot -F", "postfix/smtpd -n smtp -t inet -u -c",
    "sendmail: MTA: ./tA1BCd2E012345 from queue", "python3 worker.py --queue mail",
)


def spawn_all(total: int, matching: int, pids: list[int]) -> None:
    """posix_spawn (vfork+exec, cheap on a 2-core box) into one process group."""
    pgid = 0
    for i in range(total):
        if i < matching:
            title = f"sendmail: MTA: server host{i}.example [192.0.2.{i % 250 + 1}] cmd read"
        else:
            title = OTHER_TITLES[i % len(OTHER_TITLES)]
        pid = os.posix_spawn(SLEEP, [title, "3600"], {}, setpgroup=pgid)
        pids.append(pid)
        if pgid == 0:
            pgid = pid


def cleanup(pids: list[int]) -> None:
    """Kill and reap every child, even after an error."""
    if pids:
        try:
            os.killpg(pids[0], signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def timed(wd: Watchdog, runs: int) -> tuple[float, int]:
    times = []
    found = 0
    for _ in range(runs):
        started = time.perf_counter()
        found = len(wd.scan())
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", type=int, default=2000)
    ap.add_argument("--matching", type=int, default=300)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    pids: list[int] = []

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)     # run the finally below: no orphans left behind

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        t0 = time.perf_counter()
        spawn_all(args.procs, args.matching, pids)
        spawn_s = time.perf_counter() - t0
        time.sleep(0.5)     # let every exec finish so titles are in place
        total = len(os.listdir("/proc"))
        # Worst case: every matching title is old enough (clock in the future), so each
        # one costs a create_time and a user lookup too.
        stuck = Watchdog(WatchdogConfig(limit=60), clock=lambda: time.time() + 3600)
        young = Watchdog(WatchdogConfig(limit=3600))
        stuck.scan()        # warm-up (psutil boot time, passwd lookups)
        med_stuck, n_stuck = timed(stuck, args.runs)
        med_young, n_young = timed(young, args.runs)
        print(f"spawned {args.procs} processes in {spawn_s:.2f} s "
              f"({args.matching} titled as stuck sendmail sessions); /proc entries: {total}")
        print(f"scan, {n_stuck} stuck found:  median {med_stuck * 1000:.1f} ms "
              f"over {args.runs} runs (target < 100 ms)")
        print(f"scan, {n_young} stuck (all young): median {med_young * 1000:.1f} ms "
              f"over {args.runs} runs")
        print(f"processes read per scan: {stuck.stats()['processes_seen']}")
    finally:
        cleanup(pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
