"""Find a followed file's rotated siblings (mail.log.1, mail.log-20261121, ...): the file we
were reading, and every file rotated after it, however many rotations came in between."""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from collections.abc import Collection
from dataclasses import dataclass

from logwatch.engine.model import Position

FP_LEN = 1024                 # the fingerprint covers the first line, at most this many bytes
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip")


def first_line(fd: int) -> bytes | None:
    """The file's first line (None until it is complete)."""
    try:
        head = os.pread(fd, FP_LEN, 0)
    except OSError:
        return None
    nl = head.find(b"\n")
    if nl >= 0:
        return head[: nl + 1]
    return head if len(head) == FP_LEN else None


def fp_hex(first: bytes | None) -> str:
    return hashlib.sha256(first).hexdigest()[:32] if first else ""


def file_fp(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        return fp_hex(first_line(fd))
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Sibling:
    path: str
    st: os.stat_result

    @property
    def ident(self) -> tuple[int, int]:
        return (self.st.st_ino, self.st.st_dev)

    def order(self) -> tuple[int, int, int | str]:
        """Oldest first: by mtime; on a tie (coarse timestamps), mail.log.3 before .2, and
        dated names in name order."""
        suffix = os.path.basename(self.path).rsplit(".", 1)[-1]
        if suffix.isdigit():
            return (self.st.st_mtime_ns, 0, -int(suffix))
        return (self.st.st_mtime_ns, 1, self.path)


def siblings(path: str, exclude: tuple[int, int] | None = None) -> list[Sibling]:
    """path's uncompressed rotated siblings in its directory (regular files only)."""
    d, base = os.path.split(path)
    out = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    for e in entries:
        if e.name == base or not e.name.startswith(base) or e.name.endswith(COMPRESSED):
            continue
        try:
            st = e.stat()
        except OSError:
            continue
        if stat_mod.S_ISREG(st.st_mode) and (st.st_ino, st.st_dev) != exclude:
            out.append(Sibling(e.path, st))
    return out


def find_previous(path: str, pos: Position, cur: os.stat_result | None,
                  by_inode: bool) -> Sibling | None:
    """The file we were reading at pos among path's rotated siblings: by inode (rename
    rotation), else by first line (a copytruncate copy holding at least pos.offset bytes)."""
    sibs = siblings(path, None if cur is None else (cur.st_ino, cur.st_dev))
    if by_inode:
        for s in sibs:
            if s.ident == (pos.inode, pos.dev) and \
                    (not pos.fingerprint or file_fp(s.path) == pos.fingerprint):
                return s
    if pos.fingerprint:
        cands = [s for s in sibs
                 if s.st.st_size >= pos.offset and file_fp(s.path) == pos.fingerprint]
        if cands:
            return max(cands, key=Sibling.order)
    return None


def next_rotated(path: str, after_ns: int, current: tuple[int, int] | None,
                 open_ids: Collection[tuple[int, int]],
                 seen_fps: Collection[str]) -> Sibling | None:
    """The oldest sibling rotated after the file we finished (mtime >= after_ns) that we have
    not read: neither open now nor holding a generation we read (same first line, e.g. the
    copy copytruncate made of data we read from the file itself). None: go on with path."""
    best: Sibling | None = None
    for s in siblings(path, current):
        if s.st.st_mtime_ns < after_ns or s.st.st_size == 0 or s.ident in open_ids:
            continue
        fp = file_fp(s.path)
        # No complete first line yet: a copy being made (copytruncate), not a file to read.
        if not fp or fp in seen_fps:
            continue
        if best is None or s.order() < best.order():
            best = s
    return best
