"""StdinSource on real pipes: non-blocking reads, complete lines only, EOF, bad bytes."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from logwatch.sources import StdinSource


@pytest.fixture
def pipe() -> Iterator[tuple[object, int]]:
    r, w = os.pipe()
    rf = os.fdopen(r, "rb", buffering=0)
    yield rf, w
    rf.close()
    try:
        os.close(w)
    except OSError:
        pass


def test_lines_partial_and_eof(pipe) -> None:
    rf, w = pipe
    got: list[tuple[str, bytes]] = []
    src = StdinSource(lambda n, c: got.append((n, c)), stream=rf)
    src.process()                                  # nothing there: does not block
    assert got == [] and not src.eof
    os.write(w, b"one\ntw")
    src.process()
    assert got == [("stdin", b"one\n")]
    os.write(w, b"o\n\x00\xff bad\nlast-without-newline")
    src.process()
    assert got[-1] == ("stdin", b"two\n\x00\xff bad\n")
    os.close(w)
    src.process()
    assert src.eof
    assert got[-1] == ("stdin", b"last-without-newline\n")
    assert src.fileno() is None                   # the daemon unregisters and may exit
    assert src.stats()["stdin"]["lines"] == 4


def test_from_a_writer_process_with_long_line() -> None:
    script = ("import sys\nw = sys.stdout.buffer\n"
              "for i in range(50000):\n    w.write(b'%06d x\\n' % i)\n"
              "    if i == 25000: w.write(b'L' * 300000 + b'\\n')\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        got: list[bytes] = []
        src = StdinSource(lambda n, c: got.append(c), stream=p.stdout, max_line=1000)
        sel = selectors.DefaultSelector()
        sel.register(src.fileno(), selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while not src.eof:
            assert time.monotonic() < deadline
            sel.select(0.1)
            src.process()
        sel.close()
    finally:
        p.stdout.close()
        p.wait()
    lines = b"".join(got).split(b"\n")[:-1]
    assert lines == [b"%06d x" % i for i in range(50000)]
    assert src.stats()["stdin"]["skipped_long"] == 1
