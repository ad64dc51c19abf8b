"""Rotations the tailer sees only after the fact: several rename rotations or copytruncates
between two passes, a copytruncate in the middle of a read, copies of data already read."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from logrotation import shift
from sourceloop import pump, run_loop

from logwatch.sources import FileTailer


def nums(a: int, b: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(a, b))


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def rename_rotate(path: str, data: bytes) -> None:
    shift(path)
    os.rename(path, path + ".1")
    append(path, data)


def copytruncate(path: str, data: bytes) -> None:
    shift(path)
    shutil.copyfile(path, path + ".1")
    os.truncate(path, 0)
    append(path, data)


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.hook: Callable[[], None] | None = None

    def __call__(self, name: str, chunk: bytes) -> None:
        self.data += chunk
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()

    def numbers(self) -> list[int]:
        return [int(line.split()[1]) for line in self.data.split(b"\n")[:-1]]


@pytest.fixture(params=["inotify", "polling"])
def make(request) -> Iterator[Callable[..., tuple[FileTailer, Sink]]]:
    made: list[FileTailer] = []

    def _make(path: str, **kw) -> tuple[FileTailer, Sink]:
        sink = Sink()
        t = FileTailer([path], on_chunk=sink, force_polling=request.param == "polling",
                       poll_interval=0.02, **kw)
        made.append(t)
        return t, sink

    yield _make
    for t in made:
        t.close()


def read_then_leave_unread(tmp_path, make, read: int, unread: int) -> tuple[str, Any, Any]:
    """A tailer that has read lines 0..read-1 of mail.log, and lines up to `unread` written
    after that pass: the state in which the rotations of the next tests come."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make(p)
    append(p, nums(0, read))
    pump(t, lambda: len(sink.numbers()) == read)
    append(p, nums(read, unread))
    return p, t, sink


def test_three_rename_rotations_between_two_passes(tmp_path, make) -> None:
    p, t, sink = read_then_leave_unread(tmp_path, make, 100, 150)
    rename_rotate(p, nums(150, 300))
    rename_rotate(p, nums(300, 450))
    rename_rotate(p, nums(450, 600))
    pump(t, lambda: len(sink.numbers()) >= 600)
    assert sink.numbers() == list(range(600))
    assert t.stats()[p]["rotations"] == 3


def test_two_copytruncates_between_two_passes(tmp_path, make) -> None:
    p, t, sink = read_then_leave_unread(tmp_path, make, 100, 150)
    copytruncate(p, nums(150, 300))
    copytruncate(p, nums(300, 400))
    pump(t, lambda: len(sink.numbers()) >= 400)
    assert sink.numbers() == list(range(400))


def test_mixed_rotations_between_two_passes(tmp_path, make) -> None:
    p, t, sink = read_then_leave_unread(tmp_path, make, 10, 20)
    copytruncate(p, nums(20, 30))
    rename_rotate(p, nums(30, 40))
    copytruncate(p, nums(40, 50))
    rename_rotate(p, nums(50, 60))
    pump(t, lambda: len(sink.numbers()) >= 60)
    assert sink.numbers() == list(range(60))


def test_copytruncate_during_a_read_reads_nothing_twice(tmp_path, make) -> None:
    """Truncated and rewritten past our offset while a chunk is being handled (the daemon
    busy with its effects): the next read must not take the new file's bytes at the old
    offset, and the new file must not be read twice (issue 12.14)."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 100))
    t, sink = make(p, from_start=True)
    sink.hook = lambda: copytruncate(p, nums(100, 400))
    pump(t, lambda: len(sink.numbers()) >= 400)
    assert sink.numbers() == list(range(400))


def test_new_file_rotated_before_its_first_read(tmp_path, make) -> None:
    """A file created empty and copytruncated before we read a byte of it: the copy is read."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make(p)
    append(p, nums(0, 50))
    copytruncate(p, nums(50, 60))
    pump(t, lambda: len(sink.numbers()) >= 60)
    assert sink.numbers() == list(range(60))


def test_copy_of_data_already_read_is_not_read_again(tmp_path, make) -> None:
    """copytruncate's copy of lines we read holds no new line, even when its mtime ties with
    the last write we saw (coarse timestamps): known by its first line, it is skipped."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make(p)
    append(p, nums(0, 100))
    pump(t, lambda: len(sink.numbers()) == 100)
    shift(p)
    shutil.copyfile(p, p + ".1")
    append(p, nums(100, 110))                   # written between copy and truncate: read,
    pump(t, lambda: len(sink.numbers()) == 110)  # and in no file (copytruncate's race)
    mtime = os.stat(p).st_mtime_ns
    os.utime(p + ".1", ns=(mtime, mtime))
    os.truncate(p, 0)
    append(p, nums(110, 120))
    pump(t, lambda: len(sink.numbers()) >= 120)
    rename_rotate(p, nums(120, 130))
    pump(t, lambda: len(sink.numbers()) >= 130)
    assert sink.numbers() == list(range(130))


def test_old_rotated_files_are_not_read(tmp_path, make) -> None:
    """Files rotated before we started are history, not files rotated between two passes."""
    p = str(tmp_path / "mail.log")
    append(p + ".2", nums(900, 910))
    append(p + ".1", nums(910, 920))
    os.utime(p + ".2", ns=(1, 1))
    os.utime(p + ".1", ns=(2, 2))
    append(p, nums(0, 10))
    t, sink = make(p)
    append(p, nums(10, 20))
    rename_rotate(p, nums(20, 30))
    pump(t, lambda: len(sink.numbers()) >= 20)
    run_loop(t, lambda: False, 0.3)            # nothing more comes
    assert sink.numbers() == list(range(10, 30))


def test_copy_made_but_not_yet_truncated_is_not_read_as_a_file(tmp_path, make) -> None:
    """Looked between copytruncate's copy and its truncate: the copy holds what the path
    holds; it is not read on top of the path."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make(p)
    append(p, nums(0, 50))
    shutil.copyfile(p, p + ".1")                 # the copy; the truncate has not come yet
    pump(t, lambda: len(sink.numbers()) >= 50)
    run_loop(t, lambda: False, 0.2)
    assert sink.numbers() == list(range(50))
    os.truncate(p, 0)
    append(p, nums(50, 60))
    pump(t, lambda: len(sink.numbers()) >= 60)
    # After a rename rotation too, while the new file's copy is being made.
    append(p, nums(60, 70))
    rename_rotate(p, nums(70, 80))
    shift(p)
    shutil.copyfile(p, p + ".1")
    pump(t, lambda: len(sink.numbers()) >= 80)
    run_loop(t, lambda: False, 0.2)
    os.truncate(p, 0)
    append(p, nums(80, 90))
    pump(t, lambda: len(sink.numbers()) >= 90)
    assert sink.numbers() == list(range(90))


def test_first_start_right_after_a_rotation_reads_no_history(tmp_path, make) -> None:
    """Started (no saved position) on an empty file just made by a rotation, whose rotated
    predecessor was written after it (a late write): that history is not read."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    append(p + ".1", nums(900, 910))
    now = time.time_ns()
    os.utime(p, ns=(now - 2_000_000_000, now - 2_000_000_000))
    os.utime(p + ".1", ns=(now - 1_000_000_000, now - 1_000_000_000))
    t, sink = make(p)
    append(p, nums(0, 10))
    pump(t, lambda: len(sink.numbers()) >= 10)
    run_loop(t, lambda: False, 0.2)
    assert sink.numbers() == list(range(10))


def test_copytruncate_then_rename_during_a_read(tmp_path, make) -> None:
    """While a chunk is handled the file is copytruncated, rewritten past our offset and
    then renamed away: the rest of the first generation comes from the copy, the second
    from the renamed file, from its start (found by the 100,000-line daemon test)."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 100))
    t, sink = make(p, from_start=True)

    def rotate_twice() -> None:
        append(p, nums(100, 120))                # not read yet: only the copy will hold it
        copytruncate(p, nums(120, 400))
        rename_rotate(p, nums(400, 450))

    sink.hook = rotate_twice
    pump(t, lambda: len(sink.numbers()) >= 450)
    run_loop(t, lambda: False, 0.2)
    assert sink.numbers() == list(range(450))


def _rotate_after_first_scan(monkeypatch, p: str, data: bytes) -> list[int]:
    """Wrap tail.next_rotated so that, once, right after the tailer has scanned the directory,
    logrotate renames everything again (path.N -> path.N+1, path -> path.1): the window
    between the choice of the next file and its open."""
    import logwatch.sources.tail as tail_mod

    real = tail_mod.next_rotated
    calls = [0]

    def wrapped(*a, **kw):
        out = real(*a, **kw)
        calls[0] += 1
        if calls[0] == 1:
            rename_rotate(p, data)
        return out

    monkeypatch.setattr(tail_mod, "next_rotated", wrapped)
    return calls


def test_path_rotated_again_between_the_scan_and_its_open(tmp_path, make, monkeypatch) -> None:
    """The finished file's successor is the path (nothing rotated in between), but the path is
    renamed to .1 before we open it: that file is read, then the new path (the 100,000-line
    daemon test lost such a generation whole under load)."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 100))
    t, sink = make(p, from_start=True)
    pump(t, lambda: len(sink.numbers()) == 100)
    rename_rotate(p, nums(100, 200))           # G1 -> .1, G2 at the path
    calls = _rotate_after_first_scan(monkeypatch, p, nums(200, 300))   # G2 -> .1, G3
    pump(t, lambda: sink.numbers()[-1:] == [299])     # G3's last line: read last
    run_loop(t, lambda: False, 0.2)
    assert calls[0] >= 1
    assert sink.numbers() == list(range(300))


def test_rotated_file_renamed_between_the_scan_and_its_open(tmp_path, make, monkeypatch) -> None:
    """The next file to read is path.1, but logrotate shifts it to path.2 (and the path to
    path.1) before we open it: the file chosen is read, not whatever path.1 is by then."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 100))
    t, sink = make(p, from_start=True)
    pump(t, lambda: len(sink.numbers()) == 100)
    rename_rotate(p, nums(100, 200))           # G1 -> .1, G2 at the path
    rename_rotate(p, nums(200, 300))           # G1 -> .2, G2 -> .1, G3 at the path
    calls = _rotate_after_first_scan(monkeypatch, p, nums(300, 400))   # G2 -> .2, G3 -> .1
    pump(t, lambda: sink.numbers()[-1:] == [399])     # the path's: read last
    run_loop(t, lambda: False, 0.2)
    assert calls[0] >= 1
    assert sink.numbers() == list(range(400))


def test_positions_saved_before_the_first_read_do_not_hide_a_copy(tmp_path, make) -> None:
    """As above, with the daemon's once-a-second save of positions (positions() computes the
    fingerprint) between the copytruncate and our first read: the copy is still read first."""
    p = str(tmp_path / "mail.log")
    append(p, b"")
    t, sink = make(p)
    append(p, nums(0, 50))
    copytruncate(p, nums(50, 60))
    t.positions()
    pump(t, lambda: sink.numbers()[-1:] == [59])
    assert sink.numbers() == list(range(60))


def test_path_copytruncated_between_the_scan_and_its_open(tmp_path, make, monkeypatch) -> None:
    """The path is the next file to read, but it is copytruncated (same inode) before we open
    it: its copy is read first, then its new content (bench/rotation_bench.py lost one
    such generation under load)."""
    p = str(tmp_path / "mail.log")
    append(p, nums(0, 100))
    t, sink = make(p, from_start=True)
    pump(t, lambda: len(sink.numbers()) == 100)
    append(p, nums(100, 150))                  # not read: only the copy will hold it
    copytruncate(p, nums(150, 200))            # C1 (.1): 0-150; the path: 150-200
    import logwatch.sources.tail as tail_mod

    real = tail_mod.next_rotated
    calls = [0]

    def wrapped(*a, **kw):
        out = real(*a, **kw)
        calls[0] += 1
        if calls[0] == 1:
            copytruncate(p, nums(200, 300))    # C2 (.1): 150-200; the path: 200-300
        return out

    monkeypatch.setattr(tail_mod, "next_rotated", wrapped)
    pump(t, lambda: sink.numbers()[-1:] == [299])
    run_loop(t, lambda: False, 0.2)
    assert calls[0] >= 1
    assert sink.numbers() == list(range(300))
