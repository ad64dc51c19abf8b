"""The hash: relay-map type (Berkeley DB hash files, PATH.db)."""

from __future__ import annotations

import struct
from typing import BinaryIO

from logwatch.effectors.relaymap import MapType, NotAMap, header_problem

MAGIC = 0x061561    # Berkeley DB hash metadata page


def _needed_size(head: bytes, _fh: BinaryIO) -> int:
    """The size the metadata page promises: (last page number + 1) * page size."""
    # Berkeley DB metadata page: magic, version, page size, ..., last page number.
    magic, _version, pagesize = struct.unpack_from("<III", head, 12)
    fmt = "<I"
    if magic != MAGIC:
        magic, _version, pagesize = struct.unpack_from(">III", head, 12)
        fmt = ">I"
    if magic != MAGIC or pagesize <= 0:
        raise NotAMap("not a Berkeley DB hash file")
    (last_pgno,) = struct.unpack_from(fmt, head, 32)
    return (last_pgno + 1) * pagesize


def structure_problem(path: str) -> str | None:
    """Why the file cannot be a whole Berkeley DB hash map, or None."""
    return header_problem(path, _needed_size)


# A running smtpd notices an in-place change only by a later whole-second st_mtime (or the
# file being unlinked): every change moves the mtime on (RelayMap._bump_mtime).
MAP_TYPE = MapType("hash", ".db", structure_problem, bump_mtime=True)
