"""logwatch.effectors.runner: a tool's input is waiting in its stdin before it starts, so a ban does not
wait for the daemon to be scheduled again; big inputs and no input still work."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from logwatch.effectors.runner import PREFILL_MAX, run_tool

# Reports how long its read of stdin took, then echoes the length of what it read.
READER = ("import sys, time; t = time.monotonic(); data = sys.stdin.read(); "
          "print(round(time.monotonic() - t, 3), len(data))")


def test_input_is_there_before_the_caller_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    real = subprocess.Popen.communicate

    def late(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(1.5)                # the daemon is not scheduled for a while
        return real(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", late)
    rules = "*filter\n-A X -s 192.0.2.1/32 -j DROP\nCOMMIT\n"
    proc = run_tool([sys.executable, "-c", READER], rules)
    waited, length = proc.stdout.split()
    assert proc.returncode == 0 and int(length) == len(rules)
    assert float(waited) < 1.0, f"the tool waited {waited} s for its input"


def test_big_input_no_input_and_failures() -> None:
    big = "x" * (PREFILL_MAX + 10)
    proc = run_tool([sys.executable, "-c", READER], big, timeout=60)
    assert proc.stdout.split()[1] == str(len(big))
    assert run_tool([sys.executable, "-c", "print('hi')"]).stdout == "hi\n"
    proc = run_tool([sys.executable, "-c", "import sys; sys.exit('bad line 2')"], "a\n")
    assert proc.returncode == 1 and "bad line 2" in proc.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], "a\n", timeout=0.5)


def test_run_raises_typed_errors() -> None:
    """run(): a missing tool, a hung one and a bad exit are three distinct error types."""
    from logwatch.effectors.runner import CommandFailed, CommandTimeout, ToolMissing, run

    with pytest.raises(ToolMissing):
        run(["/nonexistent/logwatchd-no-such-tool"])
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as hung:
        run([sys.executable, "-c", "import time; time.sleep(30)"], "a\n", timeout=0.5)
    assert time.monotonic() - started < 20 and hung.value.timeout == 0.5
    with pytest.raises(CommandFailed) as failed:
        run([sys.executable, "-c", "import sys; sys.exit('bad line 2')"], "a\n")
    assert failed.value.returncode == 1 and "bad line 2" in failed.value.stderr
    assert run([sys.executable, "-c", "import sys; sys.exit(3)"], ok_codes=(3,)).returncode == 3
    assert run([sys.executable, "-c", "import sys; sys.exit(3)"], check=False).returncode == 3
    assert run([sys.executable, "-c", "print(input())"], "hi\n").stdout == "hi\n"
