"""The one runner for system tools (iptables, ipset, nft, postmap, postconf): argument lists,
never a shell, a timeout on every run, typed errors, and the input already in the tool's stdin.

subprocess.run(input=...) writes the input only after the tool has started, so a tool that
needs its input (iptables-restore, ipset restore, nft -f -) waits until the daemon is scheduled
again; on a busy machine that wait is the largest part of a ban's latency. Input that fits in a
pipe's buffer is written before the tool starts instead, so the tool never waits for us.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence

# Linux pipes hold 64 KiB; a pipe of a user over its pipe quota holds one 4 KiB page, and a
# non-blocking write tells us so (then the input goes the ordinary way).
PREFILL_MAX = 65536
# No tool run may take longer than this unless its caller says otherwise (a hung tool must
# end in an error, never stall the loop and the control socket for ever).
DEFAULT_TIMEOUT = 600.0
# Seconds iptables-restore waits for a held xtables lock (--wait=N) before it gives up: far
# below any caller's timeout, so a lock held by someone else is an error, never a hang.
XTABLES_WAIT = 10
# Runs that ended in an error, by tool name (logwatchd_command_failures_total): a process-wide
# count, as every tool of the daemon goes through run().
FAILURES: Counter[str] = Counter()


class ToolError(Exception):
    """A system tool could not be run or did not succeed."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        self.argv = list(argv)
        super().__init__(message)


class ToolMissing(ToolError):
    """The tool is not installed (or not executable)."""


class CommandTimeout(ToolError):
    """The tool gave no answer within the timeout (and was killed)."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.timeout = timeout
        super().__init__(argv, f"{argv[0]}: no answer within {timeout:.0f} s")


class CommandFailed(ToolError):
    """The tool exited with a status the caller does not accept."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, stdout: str) -> None:
        self.returncode, self.stderr, self.stdout = returncode, stderr, stdout
        super().__init__(argv, f"{' '.join(argv)} failed (exit {returncode}): "
                               f"{stderr.strip() or stdout.strip()}")


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


def run_tool(argv: list[str], stdin: str | None = None, timeout: float | None = None,
             stdout: bool = True) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, input=stdin, captured, text) with the input pre-written."""
    out = subprocess.PIPE if stdout else subprocess.DEVNULL
    fd = None if stdin is None else _prefilled(stdin.encode())
    if fd is None:
        return subprocess.run(argv, input=stdin, stdout=out, stderr=subprocess.PIPE, text=True,
                              check=False, timeout=timeout)
    try:
        return subprocess.run(argv, stdin=fd, stdout=out, stderr=subprocess.PIPE, text=True,
                              check=False, timeout=timeout)
    finally:
        os.close(fd)


def run(argv: list[str], stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT, *,
        check: bool = True, ok_codes: tuple[int, ...] = (0,),
        stdout: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one tool; ToolMissing, CommandTimeout, or (with check) CommandFailed on a bad exit."""
    try:
        return _run(argv, stdin, timeout, check, ok_codes, stdout)
    except ToolError:
        FAILURES[os.path.basename(argv[0])] += 1
        raise


def _run(argv: list[str], stdin: str | None, timeout: float, check: bool,
         ok_codes: tuple[int, ...], stdout: bool) -> subprocess.CompletedProcess[str]:
    try:
        proc = run_tool(argv, stdin, timeout=timeout, stdout=stdout)
    except FileNotFoundError as exc:
        raise ToolMissing(argv, f"{argv[0]}: cannot run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(argv, timeout) from exc
    except OSError as exc:
        raise ToolError(argv, f"{argv[0]}: cannot run: {exc}") from exc
    if check and proc.returncode not in ok_codes:
        raise CommandFailed(argv, proc.returncode, proc.stderr or "", proc.stdout or "")
    return proc


Runner = Callable[..., subprocess.CompletedProcess[str]]
