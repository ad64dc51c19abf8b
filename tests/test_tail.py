"""FileTailer against real files in a temporary directory: appearance, rotation, truncation,
partial and overlong lines, bad bytes, several files, polling fallback."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from sourceloop import pump, run_loop

from logwatch.sources import FileTailer, LineBuffer
from logwatch.sources import tail as tail_mod


class Sink:
    """Collects delivered chunks and checks each holds only complete lines."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []

    def __call__(self, name: str, chunk: bytes) -> None:
        assert chunk.endswith(b"\n"), chunk[-50:]
        self.chunks.append((name, chunk))

    def lines(self, name: str | None = None) -> list[bytes]:
        data = b"".join(c for n, c in self.chunks if name is None or n == name)
        return data.split(b"\n")[:-1]


def settle(src, duration: float = 0.1) -> None:
    """Let the loop run a moment (events only, as in the daemon)."""
    run_loop(src, lambda: False, duration)


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def nums(a: int, b: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(a, b))


def follow_new(make, path: str, lines: int = 0) -> tuple[FileTailer, Sink]:
    """A tailer on a new, empty file, after `lines` numbered lines were written and read."""
    append(path, b"")
    t, sink = make([path])
    if lines:
        append(path, nums(0, lines))
        pump(t, lambda: len(sink.lines()) == lines)
    return t, sink


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make(tmp_path, mode) -> Iterator[Callable[..., tuple[FileTailer, Sink]]]:
    made: list[FileTailer] = []

    def _make(paths: list[str], **kw) -> tuple[FileTailer, Sink]:
        sink = Sink()
        t = FileTailer(paths, on_chunk=sink, force_polling=(mode == "polling"),
                       poll_interval=0.05, **kw)
        made.append(t)
        return t, sink

    yield _make
    for t in made:
        t.close()


# -- LineBuffer ----------------------------------------------------------------

def test_linebuffer_partial_and_long_lines() -> None:
    lb = LineBuffer(max_line=10)
    assert lb.feed(b"abc\nde") == b"abc\n"
    assert lb.held == 2
    assert lb.feed(b"f\n") == b"def\n"
    # An overlong line split over several feeds is skipped, the next line survives.
    assert lb.feed(b"x" * 8) == b""
    assert lb.feed(b"x" * 8) == b""
    assert lb.held == 16
    assert lb.feed(b"xxx\nok\n") == b"ok\n"
    assert lb.skipped_long == 1
    # Overlong lines inside one block of complete lines, at start, middle and end.
    block = b"y" * 11 + b"\na\n" + b"z" * 30 + b"\nexactly10!\n" + b"w" * 12 + b"\n"
    assert lb.feed(block) == b"a\nexactly10!\n"
    assert lb.skipped_long == 4
    assert lb.feed(b"tail") == b""
    assert lb.flush() == b"tail\n"
    assert lb.lines == 6


def test_linebuffer_drop_long_many_lines() -> None:
    lb = LineBuffer(max_line=100)
    good = [b"%05d" % i for i in range(5000)]
    parts = []
    for i, g in enumerate(good):
        parts.append(g + b"\n")
        if i % 997 == 0:
            parts.append(b"L" * (101 + i) + b"\n")
    assert lb.feed(b"".join(parts)) == b"\n".join(good) + b"\n"
    assert lb.skipped_long == 6


# -- following files -------------------------------------------------------------

def test_absent_at_start_then_created(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = make([p])
    settle(t)
    assert sink.chunks == []
    append(p, nums(0, 10))
    pump(t, lambda: len(sink.lines()) == 10)
    assert sink.lines() == nums(0, 10).split(b"\n")[:-1]
    assert sink.chunks[0][0] == p


def test_existing_file_read_from_end_or_start(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 5) + b"partial-being-written")
    t, sink = make([p])
    append(p, b"-done\n" + nums(5, 7))
    pump(t, lambda: len(sink.lines()) == 3)
    # From the end, but a line half-written at start-up is read whole.
    assert sink.lines() == [b"partial-being-written-done", b"line 000005", b"line 000006"]
    t2, sink2 = make([p], from_start=True)
    pump(t2, lambda: len(sink2.lines()) == 8)
    assert sink2.lines()[:5] == nums(0, 5).split(b"\n")[:-1]


def test_partial_line_held_back(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p)
    append(p, b"complete\nhalf")
    pump(t, lambda: len(sink.lines()) == 1)
    settle(t)
    assert sink.lines() == [b"complete"]
    assert t.positions()[0].offset == len(b"complete\n")
    append(p, b" and the rest\n")
    pump(t, lambda: len(sink.lines()) == 2)
    assert sink.lines() == [b"complete", b"half and the rest"]


def test_rename_rotation_with_late_writes_to_old_file(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p)
    with open(p, "ab", buffering=0) as old:
        old.write(nums(0, 100))
        pump(t, lambda: len(sink.lines()) == 100)
        old.write(b"line 000100 part")
        os.rename(p, p + ".1")
        settle(t)
        # The writer has not reopened yet: it keeps writing to the renamed file.
        old.write(b"ial\n" + nums(101, 200))
        settle(t)
        open(p, "wb").close()           # logrotate "create": a new empty file
        settle(t)
        old.write(nums(200, 300))
    append(p, nums(300, 400))           # the writer moved to the new file
    pump(t, lambda: len(sink.lines()) >= 400)
    settle(t)
    expected = nums(0, 100) + b"line 000100 partial\n" + nums(101, 400)
    assert b"\n".join(sink.lines()) + b"\n" == expected
    assert t.stats()[p]["rotations"] == 1


def test_deleted_then_recreated(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p, 50)
    os.unlink(p)
    settle(t)
    append(p, nums(50, 80))
    pump(t, lambda: len(sink.lines()) == 80)
    settle(t)
    assert sink.lines() == nums(0, 80).split(b"\n")[:-1]


def test_copytruncate_rest_read_from_copy(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p, 100)
    # Lines written after our last read, then copy + truncate before we look again, then
    # more lines than we had read: offset alone would not reveal the truncation.
    append(p, nums(100, 150))
    with open(p, "rb") as f:
        data = f.read()
    with open(p + ".1", "wb") as f:
        f.write(data)
    os.truncate(p, 0)
    append(p, nums(150, 400))
    pump(t, lambda: len(sink.lines()) >= 400)
    settle(t)
    assert sink.lines() == nums(0, 400).split(b"\n")[:-1]
    assert t.stats()[p]["truncations"] == 1


def test_truncate_without_copy_restarts_at_zero(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p, 100)
    os.truncate(p, 0)
    settle(t)
    append(p, b"fresh 1\nfresh 2\n")
    pump(t, lambda: len(sink.lines()) == 102)
    assert sink.lines()[100:] == [b"fresh 1", b"fresh 2"]


def test_several_files(tmp_path, make) -> None:
    a, b = str(tmp_path / "mail.log"), str(tmp_path / "sub" / "dovecot.log")
    append(a, b"")
    t, sink = make([a, b])                  # b's directory does not even exist yet
    os.mkdir(tmp_path / "sub")
    append(b, b"dove 1\n")
    append(a, b"mail 1\n")
    os.rename(a, a + ".1")
    append(a, b"mail 2\n")
    append(b, b"dove 2\n")
    pump(t, lambda: len(sink.lines()) == 4, timeout=10)
    assert sink.lines(a) == [b"mail 1", b"mail 2"]
    assert sink.lines(b) == [b"dove 1", b"dove 2"]
    assert set(t.stats()) == {a, b}


def test_bad_bytes_and_10mb_line(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p)
    garbage = bytes(range(256)) * 8                         # NULs and every byte value
    garbage = garbage.replace(b"\n", b"") + b"\n"
    bad_utf8 = b"user \xff\xfe\xc3\x28 unknown \xed\xa0\x80\n"
    with open(p, "ab") as f:
        f.write(nums(0, 10) + garbage + b"\x00\x00\x00\n" + bad_utf8)
        f.write(b"A" * (10 << 20) + b"\n")
        f.write(nums(10, 20))
    tracemalloc.start()
    try:
        pump(t, lambda: len(sink.lines()) == 23, timeout=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    got = sink.lines()
    assert got[:10] == nums(0, 10).split(b"\n")[:-1]
    assert got[10:13] == [garbage[:-1], b"\x00\x00\x00", bad_utf8[:-1]]
    assert got[13:] == nums(10, 20).split(b"\n")[:-1]
    assert t.stats()[p]["skipped_long"] == 1
    # Bounded memory: the 10 MB line is never held whole (reads are at most 4 MiB).
    assert peak < 9 << 20, peak


def test_big_chunks_not_line_by_line(tmp_path, make) -> None:
    p = str(tmp_path / "mail.log")
    t, sink = follow_new(make, p, 100_000)
    assert len(sink.chunks) <= 5
    assert t.stats()[p]["lines"] == 100_000


def test_polling_fallback_logs_once(tmp_path, caplog) -> None:
    p = str(tmp_path / "mail.log")
    sink = Sink()
    with caplog.at_level(logging.INFO, logger="logwatchd.sources.tail"):
        t = FileTailer([p], on_chunk=sink, force_polling=True, poll_interval=0.05)
        try:
            assert t.fileno() is None
            append(p, b"one\n")
            pump(t, lambda: sink.lines() == [b"one"])
        finally:
            t.close()
    polling = [r for r in caplog.records if "action=polling" in r.getMessage()]
    assert len(polling) == 1


def test_inotify_fd_becomes_readable_on_write(tmp_path) -> None:
    p = str(tmp_path / "mail.log")
    append(p, b"")
    sink = Sink()
    t = FileTailer([p], on_chunk=sink)
    try:
        fd = t.fileno()
        assert fd is not None
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        # Readable at once, so what is already there is read without waiting for an event.
        assert sel.select(0)
        t.process()
        assert sel.select(0) == []
        append(p, b"there before\n")
        assert sel.select(2.0)
        t.process()
        assert sink.lines() == [b"there before"]
        append(p, b"wake\n")
        assert sel.select(2.0), "no inotify event for a write"
        t.process()
        assert sink.lines() == [b"there before", b"wake"]
        assert sel.select(0) == []               # events drained by process()
        sel.close()
    finally:
        t.close()


def test_backlog_is_read_in_budgeted_calls(tmp_path, monkeypatch) -> None:
    """A big backlog is read over several process() calls, each bounded, the fd staying
    readable in between so the loop comes back at once (timers run between the calls)."""
    import logwatch.sources.tail as tail
    monkeypatch.setattr(tail, "BUDGET", 1 << 20)
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 300_000))                   # 3.6 MB
    sink = Sink()
    t = FileTailer([p], on_chunk=sink, from_start=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(t.fileno(), selectors.EVENT_READ)
        calls = 0
        while len(sink.lines()) < 300_000:
            assert sel.select(1.0), "fd not readable while a backlog remains"
            before = sum(len(c) for _, c in sink.chunks)
            t.process()
            assert sum(len(c) for _, c in sink.chunks) - before <= (1 << 20) + 65536
            calls += 1
        assert calls >= 3
        assert sink.lines() == nums(0, 300_000).split(b"\n")[:-1]
        t.process()
        assert sel.select(0) == []
        sel.close()
    finally:
        t.close()


def test_falls_back_to_polling_without_inotify(tmp_path, monkeypatch, caplog) -> None:
    def refuse() -> None:
        raise OSError(errno.EMFILE, "too many inotify instances")

    monkeypatch.setattr(tail_mod, "Inotify", refuse)
    p = str(tmp_path / "mail.log")
    append(p, b"")
    sink = Sink()
    with caplog.at_level(logging.WARNING, logger="logwatchd.sources.tail"):
        t = FileTailer([p], on_chunk=sink, poll_interval=0.05)
    try:
        assert t.polling and t.fileno() is None
        append(p, b"a\n")
        os.rename(p, p + ".1")
        append(p + ".1", b"b\n")
        append(p, b"c\n")
        pump(t, lambda: len(sink.lines()) == 3)
        assert sink.lines() == [b"a", b"b", b"c"]
    finally:
        t.close()
    msgs = [r.getMessage() for r in caplog.records if "action=polling" in r.getMessage()]
    assert len(msgs) == 1 and "inotify_init failed" in msgs[0]


def test_directory_removed_and_recreated(tmp_path, make) -> None:
    d = tmp_path / "log"
    d.mkdir()
    p = str(d / "mail.log")
    t, sink = follow_new(make, p)
    append(p, b"one\n")
    pump(t, lambda: len(sink.lines()) == 1)
    os.unlink(p)
    d.rmdir()
    settle(t)
    d.mkdir()
    append(p, b"two\n")
    pump(t, lambda: len(sink.lines()) == 2)
    os.rename(p, p + ".1")
    append(p, b"three\n")
    pump(t, lambda: len(sink.lines()) == 3)
    assert sink.lines() == [b"one", b"two", b"three"]


def test_closed_tailer_delivers_nothing(tmp_path, make) -> None:
    """A reload closes the tailer; a stale ready fd must not make it read the files again."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 5))
    t, sink = make([p], from_start=True)
    pump(t, lambda: len(sink.lines()) == 5)
    t.close()
    append(p, nums(5, 6))
    t.process()
    assert len(sink.lines()) == 5


def test_same_file_under_two_names_is_followed_once(tmp_path, make, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make([p, "mail.log", "./mail.log"])
    assert len(t.files) == 1 and list(t.stats()) == [p]
    append(p, nums(0, 3))
    pump(t, lambda: len(sink.lines()) == 3)
    settle(t)
    assert len(sink.lines()) == 3


def test_fingerprint_is_hashed_once_per_file(tmp_path, make, monkeypatch) -> None:
    import logwatch.sources.tail as tail

    hashed: list[bytes | None] = []
    real = tail.fp_hex
    monkeypatch.setattr(tail, "fp_hex", lambda first: hashed.append(first) or real(first))
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 3))
    t, sink = make([p])
    for i in range(3, 13):
        append(p, nums(i, i + 1))
        pump(t, lambda i=i: len(sink.lines()) == i - 2)
        t.positions()
    assert len(hashed) <= 2
