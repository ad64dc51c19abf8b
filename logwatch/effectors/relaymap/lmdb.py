"""The lmdb: relay-map type (LMDB files, PATH.lmdb; Debian package postfix-lmdb)."""

from __future__ import annotations

import struct
from typing import BinaryIO

from logwatch.effectors.relaymap import MapType, NotAMap, header_problem

MAGIC = 0xBEEFC0DE


def _needed_size(head: bytes, fh: BinaryIO) -> int:
    """The size the current meta page promises: (last page + 1) * page size."""
    if len(head) >= 44:
        # LMDB's second meta page sits one page in; pages are 64 KiB on some
        # architectures (ppc64el), beyond what was read.
        (pagesize,) = struct.unpack_from("<I", head, 40)
        if 0 < pagesize <= 1 << 20 and pagesize + 160 > len(head):
            fh.seek(pagesize)
            head = head[:pagesize].ljust(pagesize, b"\0") + fh.read(4096)
    # Two LMDB meta pages; the one with the higher transaction id is current.
    best: tuple[int, int, int] | None = None
    offset = 0
    for _ in range(2):
        magic, _version = struct.unpack_from("<II", head, offset + 16)
        (pagesize,) = struct.unpack_from("<I", head, offset + 40)
        last_pg, txnid = struct.unpack_from("<QQ", head, offset + 136)
        if magic != MAGIC or pagesize <= 0:
            raise NotAMap("not an LMDB file")
        if best is None or txnid > best[0]:
            best = (txnid, last_pg, pagesize)
        offset = pagesize
    if best is None:
        raise NotAMap("not an LMDB file")
    return (best[1] + 1) * best[2]


def structure_problem(path: str) -> str | None:
    """Why the file cannot be a whole LMDB map, or None."""
    return header_problem(path, _needed_size)


# Postfix opens LMDB with MDB_NOLOCK: its readers (smtpd, postmap -q) take an fcntl read lock
# per lookup, but `postmap -i` on lmdb takes no lock at all (seen with strace, Postfix 3.7),
# and LMDB reuses freed pages in place: inserts run under our fcntl write lock.
MAP_TYPE = MapType("lmdb", ".lmdb", structure_problem, lock_insert=True,
                   package="postfix, postfix-lmdb")
