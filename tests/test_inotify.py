"""Our ctypes inotify binding against the real kernel, and the event decoder on its own."""

from __future__ import annotations

import configparser
import os
import select
import struct
from pathlib import Path

import pytest

from logwatch.sources.inotify import Inotify, Mask, decode

REPO = Path(__file__).resolve().parent.parent


def wait(ino: Inotify, timeout: float = 2.0) -> bool:
    return bool(select.select([ino.fileno()], [], [], timeout)[0])


def test_directory_and_file_events(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        wd = ino.add_watch(str(tmp_path), Mask.CREATE | Mask.MOVED_FROM | Mask.MOVED_TO
                           | Mask.DELETE)
        assert ino.read() == []                    # non-blocking: nothing yet
        (tmp_path / "mail.log").write_bytes(b"x\n")
        os.rename(tmp_path / "mail.log", tmp_path / "mail.log.1")
        assert wait(ino)
        evs = ino.read()
        assert [(e.wd, e.name) for e in evs] == [(wd, "mail.log"), (wd, "mail.log"),
                                                 (wd, "mail.log.1")]
        assert evs[0].mask & Mask.CREATE and evs[1].mask & Mask.MOVED_FROM
        assert evs[1].cookie == evs[2].cookie != 0
        fwd = ino.add_watch(str(tmp_path / "mail.log.1"), Mask.MODIFY)
        with open(tmp_path / "mail.log.1", "ab") as fh:
            fh.write(b"y\n")
        assert wait(ino)
        assert [(e.wd, e.name) for e in ino.read() if e.mask & Mask.MODIFY] == [(fwd, "")]
        ino.rm_watch(fwd)
        assert any(e.wd == fwd and e.mask & Mask.IGNORED for e in ino.read())
    finally:
        ino.close()


def test_errors_are_oserrors_with_errno(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        with pytest.raises(FileNotFoundError):
            ino.add_watch(str(tmp_path / "absent"), Mask.MODIFY)
        with pytest.raises(OSError):
            ino.rm_watch(12345)
    finally:
        ino.close()
    ino.close()                                    # twice is harmless


def test_fd_is_nonblocking_and_close_on_exec() -> None:
    ino = Inotify()
    try:
        assert not os.get_blocking(ino.fileno())
        assert not os.get_inheritable(ino.fileno())
    finally:
        ino.close()


def test_decode_records_with_padded_names() -> None:
    raw = (struct.pack("iIII", 3, Mask.CREATE, 0, 16) + b"mail.log\0\0\0\0\0\0\0\0"
           + struct.pack("iIII", 5, Mask.MODIFY, 0, 0)
           + struct.pack("iIII", 3, Mask.MOVED_TO, 7, 4) + b"\xff\xfe\0\0")
    evs = decode(raw)
    assert [(e.wd, e.name, e.cookie) for e in evs] == [
        (3, "mail.log", 0), (5, "", 0), (3, os.fsdecode(b"\xff\xfe"), 7)]


def test_no_third_party_inotify_module() -> None:
    """The .deb must follow logs by inotify with Debian's packages only."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = cfg["options"]["install_requires"].split()
    assert not [r for r in requires if "inotify" in r.lower()]
    for py in (REPO / "logwatch").rglob("*.py"):
        assert "inotify_simple" not in py.read_text(), py
