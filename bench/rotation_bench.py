"""Rotation figures of the file tailer (issue 12, points 14 and 15): lines written, delivered,
duplicated and lost while the log is rotated under a busy reader.

  copytruncate  20,000 numbered lines, a copytruncate every 2,000 (copy made, file truncated,
                writing resumes at once)
  burst         20,000 numbered lines, rename rotations 50 ms apart (the writer reopens the
                path at once, as syslog does), the reader busy for --busy s per chunk

Run: .venv/bin/python bench/rotation_bench.py [--busy 0.02] [--polling] [--runs 3]
(PYTHONPATH=/path/to/other/tree runs another version of the tailer for comparison.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable

if not os.environ.get("PYTHONPATH"):      # else compare with the tree it names
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from logrotation import shift  # noqa: E402

from logwatch.sources import FileTailer  # noqa: E402

TOTAL = 20_000


def write_copytruncate(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    for i in range(1, TOTAL + 1):
        os.write(fd, b"%08d pop3-login: Login: user=<u%d>\n" % (i, i))
        if i % 2000 == 0:
            shift(path)
            shutil.copyfile(path, path + ".1")
            os.truncate(path, 0)
        if i % 200 == 0:
            time.sleep(0.001)
    os.close(fd)


def write_burst(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    next_rot = time.monotonic() + 0.05
    for i in range(1, TOTAL + 1):
        os.write(fd, b"%08d pop3-login: Login: user=<u%d>\n" % (i, i))
        if time.monotonic() >= next_rot:
            shift(path)
            os.rename(path, path + ".1")
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            next_rot = time.monotonic() + 0.05
        if i % 100 == 0:
            time.sleep(0.002)
    os.close(fd)


def run(writer: Callable[[str], None], busy: float, polling: bool) -> dict[str, int]:
    d = tempfile.mkdtemp(prefix="rotbench")
    try:
        path = os.path.join(d, "mail.log")
        open(path, "w").close()
        got: list[bytes] = []

        def sink(name: str, chunk: bytes) -> None:
            got.append(chunk)
            time.sleep(busy)            # the daemon busy with this chunk's effects

        t = FileTailer([path], on_chunk=sink, force_polling=polling, poll_interval=0.1)
        th = threading.Thread(target=writer, args=(path,))
        th.start()
        last = b"%08d " % TOTAL
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            t.process()                 # called as often as the loop can (both modes)
            time.sleep(0.001 if not polling else 0.1)
            if not th.is_alive() and got and last in got[-1][-80:]:
                break
        end = time.monotonic() + 6.0    # rotated files are let go after 5 s
        while time.monotonic() < end:
            t.process()
            time.sleep(0.05)
        th.join()
        rotations = sum(1 for n in os.listdir(d) if n.startswith("mail.log."))
        t.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    lines = b"".join(got).split(b"\n")[:-1]
    nums = Counter(int(x[:8]) for x in lines if x[:8].isdigit() and x.endswith(b">"))
    return {"written": TOTAL, "rotations": rotations, "delivered": sum(nums.values()),
            "duplicates": sum(c - 1 for c in nums.values()),
            "lost": sum(1 for i in range(1, TOTAL + 1) if i not in nums),
            "torn": len(lines) - sum(nums.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=float, default=0.02, help="seconds spent per chunk")
    ap.add_argument("--polling", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-v", action="store_true", help="log the tailer's actions to stderr")
    args = ap.parse_args()
    if args.v:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6d %(message)s")
    print(f"tailer from {os.path.dirname(sys.modules['logwatch'].__file__)}; "
          f"busy {args.busy}s per chunk; {'polling' if args.polling else 'inotify'}")
    for name, writer in (("copytruncate", write_copytruncate), ("burst", write_burst)):
        for _ in range(args.runs):
            r = run(writer, args.busy, args.polling)
            print(f"{name:13s} " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
