"""Run a system tool with its input already waiting in its stdin.

subprocess.run(input=...) writes the input only after the tool has started, so a tool that
needs its input (iptables-restore, ipset restore, nft -f -) waits until the daemon is scheduled
again; on a busy machine that wait is the largest part of a ban's latency. Input that fits in a
pipe's buffer is written before the tool starts instead, so the tool never waits for us.
"""

from __future__ import annotations

import os
import subprocess

# Linux pipes hold 64 KiB; a pipe of a user over its pipe quota holds one 4 KiB page, and a
# non-blocking write tells us so (then the input goes the ordinary way).
PREFILL_MAX = 65536


def _prefilled(data: bytes) -> int | None:
    """The read end of a pipe holding all of data, its write end closed; None if it won't fit."""
    if len(data) > PREFILL_MAX:
        return None
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        if os.write(w, data) == len(data):
            return r
    except BlockingIOError:
        pass
    finally:
        os.close(w)
    os.close(r)
    return None


def run_tool(argv: list[str], stdin: str | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, input=stdin, capture_output, text) with the input pre-written."""
    fd = None if stdin is None else _prefilled(stdin.encode())
    if fd is None:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False,
                              timeout=timeout)
    try:
        return subprocess.run(argv, stdin=fd, capture_output=True, text=True, check=False,
                              timeout=timeout)
    finally:
        os.close(fd)
