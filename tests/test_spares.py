"""logwatch.effectors.runner.Spares: an input-fed tool started ahead of need answers exactly as
a tool started on demand (output, exit status, stderr, timeout), and a spare left in a network
namespace that is gone is never used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from netns import needs_netns, netns

from logwatch.effectors import runner
from logwatch.effectors.runner import SPARES, CommandFailed, CommandTimeout, run, run_tool

# Echoes its input's length and pid; exits with the status its input names ("exit 3").
TOOL = [sys.executable, "-c",
        "import os, sys; data = sys.stdin.read(); print(len(data), os.getpid()); "
        "sys.exit(data[5:].strip() or 0) if data.startswith('exit ') else None"]


@pytest.fixture(autouse=True)
def no_spares_left():
    yield
    SPARES.close()


def test_a_spare_answers_like_a_tool_started_on_demand() -> None:
    first = run_tool(TOOL, "abc", timeout=30, spare=True)      # none ready yet: started now
    spare = SPARES.ready(TOOL)
    second = run_tool(TOOL, "abcd", timeout=30, spare=True)
    assert second.stdout.split() == ["4", str(spare.pid)]        # the spare did it
    assert first.stdout.split()[0] == "3" and first.returncode == second.returncode == 0
    assert second.args == TOOL and SPARES.ready(TOOL).pid != spare.pid   # the next one
    with pytest.raises(CommandFailed) as failed:
        run(TOOL, "exit 3", timeout=30, spare=True)
    assert failed.value.returncode == 1 and "3" in failed.value.stderr
    plain = run_tool(TOOL, "abcd", timeout=30)                   # no spare asked: none used
    assert plain.stdout.split()[1] != str(SPARES.ready(TOOL).pid)


def test_a_hung_spare_times_out_and_is_replaced() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    SPARES.start(sleeper)
    hung = SPARES.ready(sleeper)
    with pytest.raises(CommandTimeout):
        run(sleeper, "x", timeout=0.5, spare=True)
    assert hung.poll() is not None                               # killed, not left behind
    assert SPARES.ready(sleeper).pid != hung.pid


def test_a_dead_spare_is_not_used() -> None:
    SPARES.start(TOOL)
    dead = SPARES.ready(TOOL)
    dead.kill()
    dead.wait()
    out = run_tool(TOOL, "ab", timeout=30, spare=True)
    assert out.returncode == 0 and out.stdout.split()[1] != str(dead.pid)


def test_spares_are_bounded_and_closed() -> None:
    tools = [TOOL + [str(i)] for i in range(runner.Spares.LIMIT + 2)]
    for argv in tools:
        SPARES.start(argv)
    kept = [SPARES.ready(argv) for argv in tools[-runner.Spares.LIMIT:]]
    assert len(SPARES) == runner.Spares.LIMIT and None not in kept
    assert SPARES.ready(tools[0]) is None                       # the oldest went first
    SPARES.close()
    assert all(p.poll() == 0 for p in kept) and not len(SPARES)   # empty input: exit 0


def _in_namespace(proc: subprocess.Popen[str], name: str) -> bool:
    """Whether the spare has entered the namespace and runs its tool: `ip` does both a moment
    after it starts, and a spare still being `ip` is set aside, not used (runner.take())."""
    deadline = time.monotonic() + 10
    want = os.stat(f"/run/netns/{name}").st_ino
    while time.monotonic() < deadline:
        try:
            entered = os.stat(f"/proc/{proc.pid}/ns/net").st_ino == want
            execed = os.path.basename(os.readlink(f"/proc/{proc.pid}/exe")) != "ip"
        except OSError:
            return False
        if entered and execed:
            return True
        time.sleep(0.01)
    return False


@needs_netns
def test_a_spare_in_a_namespace_made_again_is_not_used() -> None:
    """`ip netns exec NAME tool` started ahead runs in the namespace NAME named then: after
    NAME is deleted and made again, the spare would write into the dead one."""
    with netns("lwsp") as ns:
        # Reads its input, then names the namespace it runs in.
        argv = ns.argv([sys.executable, "-c", "import os, sys; sys.stdin.read(); "
                        "print(os.stat('/proc/self/ns/net').st_ino)"])
        SPARES.start(argv)
        spare = SPARES.ready(argv)
        assert _in_namespace(spare, ns.name)
        first = int(run_tool(argv, "x", timeout=30, spare=True).stdout)
        assert spare.poll() == 0 and first == os.stat(f"/run/netns/{ns.name}").st_ino
        stale = SPARES.ready(argv)
        assert _in_namespace(stale, ns.name)
        subprocess.run(["ip", "netns", "del", ns.name], check=True)
        subprocess.run(["ip", "netns", "add", ns.name], check=True)
        again = int(run_tool(argv, "x", timeout=30, spare=True).stdout)
        assert again == os.stat(f"/run/netns/{ns.name}").st_ino != first
        assert stale.wait(10) == 0                               # given EOF: ended, unused


def test_a_spare_of_a_program_replaced_since_is_not_used(tmp_path) -> None:
    """An upgrade, update-alternatives (iptables-nft -> -legacy) or a wrapper put first on PATH
    after the spare started: the next run starts the program the argv names now."""
    tool = tmp_path / "lwcat"
    shutil.copy("/bin/cat", tool)
    argv = [str(tool)]
    SPARES.start(argv)
    spare = SPARES.ready(argv)
    assert run_tool(argv, "one", timeout=30, spare=True).stdout == "one"
    assert spare.poll() == 0                                     # the same file: used
    stale = SPARES.ready(argv)
    tool.unlink()
    shutil.copy("/bin/cat", tool)                                # a new file, same name
    assert SPARES.take(argv) is None and stale.wait(10) == 0      # EOF, not waited for
    assert run_tool(argv, "two", timeout=30, spare=True).stdout == "two"


def test_a_spare_left_is_never_waited_for_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare that will not end on EOF (here: one that ignores its input) is not waited for
    when it is set aside; close() ends it within its grace."""
    deaf = [sys.executable, "-c", "import time; time.sleep(60)"]
    SPARES.start(deaf)
    spare = SPARES.ready(deaf)
    monkeypatch.setattr(SPARES, "LIMIT", 1)         # the next start sets it aside
    started = time.monotonic()
    SPARES.start(TOOL)
    assert time.monotonic() - started < 1.0 and spare.poll() is None
    started = time.monotonic()
    SPARES.close(grace=0.5)
    assert time.monotonic() - started < 3 and spare.poll() is not None
