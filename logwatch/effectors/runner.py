"""The one runner for system tools (iptables, ipset, nft, postmap, postconf): argument lists,
never a shell, a timeout on every run, typed errors, and the input already in the tool's stdin.

subprocess.run(input=...) writes the input only after the tool has started, so a tool that
needs its input (iptables-restore, ipset restore, nft -f -) waits until the daemon is scheduled
again; on a busy machine that wait is the largest part of a ban's latency. Input that fits in a
pipe's buffer is written before the tool starts instead, so the tool never waits for us.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import time
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


def _in_netns(argv: Sequence[str]) -> bool:
    return len(argv) > 4 and list(argv[:3]) == ["ip", "netns", "exec"]


def _netns_of(argv: Sequence[str]) -> str:
    """The network namespace argv runs in: `ip netns exec NAME`'s, else ours."""
    return f"/run/netns/{argv[3]}" if _in_netns(argv) else "/proc/self/ns/net"


def _runs_the_tool(proc: subprocess.Popen[str], argv: Sequence[str]) -> bool:
    """Whether the spare runs the program argv names now: the same file (not one upgraded,
    switched by update-alternatives or put first on PATH since), in the same namespace."""
    tool = shutil.which(argv[4] if _in_netns(argv) else argv[0])
    try:
        now, ran = os.stat(tool) if tool else None, os.stat(f"/proc/{proc.pid}/exe")
    except OSError:
        return False
    want = _inode(_netns_of(argv))
    return (now is not None and (now.st_dev, now.st_ino) == (ran.st_dev, ran.st_ino)
            and want is not None and want == _inode(f"/proc/{proc.pid}/ns/net"))


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _end_input(proc: subprocess.Popen[str]) -> None:
    """EOF on an unused spare's stdin: a restore tool given no input exits having done nothing."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass


def _reap(proc: subprocess.Popen[str], timeout: float) -> bool:
    """Collect an ended spare (killed after `timeout`; 0: only if it has ended); True: gone."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if timeout <= 0:
            return False
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return True


class Spares:
    """Input-fed tools (iptables-restore, ipset restore, nft -f -) started ahead of need, each
    blocked reading its empty stdin. A run hands its input to the spare of its argv and waits
    for its exit as before (same status, same stderr), so only the exec, the dynamic linking
    and the tool's start-up leave the latency path: most of a one-rule ban's ~1.2 ms. The next
    spare starts right after a run. A spare that is not what a run started now would be (in
    another network namespace, or another program file) is never used."""

    LIMIT = 4                   # argvs kept ready; the oldest goes first

    def __init__(self) -> None:
        self._idle: dict[tuple[str, ...], subprocess.Popen[str]] = {}
        self._ending: list[subprocess.Popen[str]] = []     # given EOF, not collected yet

    def _discard(self, proc: subprocess.Popen[str]) -> None:
        """Never waited for on the caller's path: EOF now, collected at a later call."""
        _end_input(proc)
        self._ending = [p for p in self._ending if not _reap(p, 0)] + [proc]

    def ready(self, argv: Sequence[str]) -> subprocess.Popen[str] | None:
        """The spare waiting for argv, left in place (None: none started)."""
        return self._idle.get(tuple(argv))

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, argv: Sequence[str]) -> subprocess.Popen[str] | None:
        proc = self._idle.pop(tuple(argv), None)
        if proc is None:
            return None
        if proc.poll() is None and _runs_the_tool(proc, argv):
            return proc
        self._discard(proc)
        return None

    def start(self, argv: Sequence[str]) -> None:
        key = tuple(argv)
        if key in self._idle:
            return
        while len(self._idle) >= self.LIMIT:
            self._discard(self._idle.pop(next(iter(self._idle))))
        try:
            self._idle[key] = subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)
        except OSError:
            pass                # the next run starts the tool the ordinary way and says why

    def close(self, grace: float = 1.0) -> None:
        """End every spare: all get EOF at once, then `grace` seconds in all to exit."""
        procs = [*self._ending, *self._idle.values()]
        self._idle.clear()
        self._ending = []
        for proc in procs:
            _end_input(proc)
        deadline = time.monotonic() + grace
        for proc in procs:
            _reap(proc, max(0.0, deadline - time.monotonic()) or 0.001)


SPARES = Spares()
atexit.register(SPARES.close)


def _run_spare(proc: subprocess.Popen[str], argv: list[str], stdin: str,
               timeout: float | None) -> subprocess.CompletedProcess[str]:
    """subprocess.run's ending, on a spare already running: input, exit, output."""
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_tool(argv: list[str], stdin: str | None = None, timeout: float | None = None,
             stdout: bool = True, spare: bool = False) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, input=stdin, captured, text) with the input pre-written, or
    (`spare`, with input and output) handed to a spare started before."""
    if spare and stdin is not None and stdout:
        proc = SPARES.take(argv)
        try:
            if proc is not None:
                return _run_spare(proc, argv, stdin, timeout)
            return run_tool(argv, stdin, timeout)
        finally:
            SPARES.start(argv)
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
        stdout: bool = True, spare: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one tool; ToolMissing, CommandTimeout, or (with check) CommandFailed on a bad exit.
    `spare`: an input-fed tool run often (a ban's restore): keep one started ahead (Spares)."""
    try:
        return _run(argv, stdin, timeout, check, ok_codes, stdout, spare)
    except ToolError:
        FAILURES[os.path.basename(argv[0])] += 1
        raise


def _run(argv: list[str], stdin: str | None, timeout: float, check: bool,
         ok_codes: tuple[int, ...], stdout: bool, spare: bool) -> subprocess.CompletedProcess[str]:
    try:
        proc = run_tool(argv, stdin, timeout=timeout, stdout=stdout, spare=spare)
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
