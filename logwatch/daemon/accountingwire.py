"""What the daemon and its accounting process (accountingworker.py) share: length-prefixed
pickled frames on pipes, the records' compact wire form, the store proxy that keeps the
worker's read positions and journal cursors apart from the daemon's own, and the answer to
`logwatchctl messages` (so the daemon does not import the parser and the stats log).

Frames are pickled (both ends are our own program). A commit's records travel as what the
daemon reads of them (HandedRecord: the risk engine, the counts, fleetrisk), flat tuples
marshalled in one blob (bench: 100,000 records, worker 0.20 s + daemon 0.13 s, against
0.54 + 0.55 s for whole records as tuples, pickled, rebuilt as dataclasses); rejects as
plain tuples of their fields.
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from operator import attrgetter
from typing import Any, NamedTuple

from logwatch.engine.messages import MessageRecord, RejectedAttempt
from logwatch.parsing.events import normalize_ip
from logwatch.state import accounting as rows
from logwatch.util.duration import parse_duration

# The accounting makes a few containers per log line (the daemon: per record it is handed):
# with the collector's default threshold (700) it ran every hundred lines, each time walking
# the open messages; this many allocations between young collections cost little memory
# (little of it is cyclic).
GC_THRESHOLD = (20_000, 20, 20)
HEAD = struct.Struct("!I")
# A frame whose length has this bit is a stdin chunk as it is (no pickle: one copy less on
# each side of 100 MB): its number (NUMBER), then its bytes.
RAW_CHUNK = 1 << 31
NUMBER = struct.Struct("!Q")
PIPE_SIZE = 1 << 20           # a chunk (stdin) or a batch of records rarely blocks the writer
POSITION_PREFIX = "accounting:"     # the worker's positions and cursors, beside the daemon's

_REJECT = tuple(f.name for f in fields(RejectedAttempt))
_GET_REJECT = attrgetter(*_REJECT)


def raise_gc_threshold() -> None:
    """At least GC_THRESHOLD (a higher one set elsewhere is kept)."""
    gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(
        GC_THRESHOLD, gc.get_threshold(), strict=True)))


def frame(obj: object) -> bytes:
    """One frame: the length, then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEAD.pack(len(data)) + data


def chunk_head(number: int, chunk: bytes) -> bytes:
    """The head of a stdin chunk's frame; the chunk follows it as it is."""
    return HEAD.pack(RAW_CHUNK | (NUMBER.size + len(chunk))) + NUMBER.pack(number)


def split_frames(buf: bytearray) -> list[Any]:
    """The whole frames at the start of buf (removed from it), unpickled; a chunk's
    (chunk_head()) as ("chunk", number, bytes)."""
    out, at, size = [], 0, len(buf)
    with memoryview(buf) as view:
        while size - at >= HEAD.size:
            length = HEAD.unpack_from(buf, at)[0]
            raw, length = length & RAW_CHUNK, length & ~RAW_CHUNK
            start = at + HEAD.size
            if size - start < length:
                break
            if raw:
                out.append(("chunk", NUMBER.unpack_from(buf, start)[0],
                            bytes(view[start + NUMBER.size:start + length])))
            else:
                out.append(pickle.loads(view[start:start + length]))  # noqa: S301
            at = start + length
    del buf[:at]
    return out


def write_all(fd: int, data: bytes) -> None:
    """All of data to a blocking fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def rules_digest(ruleset: Any) -> str:
    """A digest of what the rules' self-checks test (rulecheck.check_rules' memo key, and the
    regex flags): equal digests, equal verdicts."""
    keys = [(r.id, r.source, r.kind, r.service, r.regex.pattern, r.regex.flags, r.programs,
             r.prefilters, tuple(sorted(r.service_map.items())),
             tuple((s.line, repr(s.expect)) for s in r.samples))
            for r in (*ruleset.rules, *ruleset.message_rules)]
    return hashlib.sha256(repr(keys).encode()).hexdigest()


# -- records and rejects on the pipe -----------------------------------------------------------


def encode_reject(a: RejectedAttempt) -> tuple[Any, ...]:
    return _GET_REJECT(a)


# -- what the daemon reads of a record -------------------------------------------------------


class HandedRecipient(NamedTuple):
    """What the daemon reads of a Recipient (engine.accounts.RecipientLike)."""

    address: str
    status: str
    dsn: str


class HandedRecord(NamedTuple):
    """What the daemon reads of a MessageRecord: the risk engine's and the counts'
    (engine.accounts.MessageLike), fleetrisk.risk_items()' and the side's (seq, sasl_user)."""

    client_ip: str
    sasl_user: str
    done_time: float
    seq: int
    recipients: tuple[HandedRecipient, ...]


_GET_HANDED = attrgetter(*HandedRecord._fields[:-1])
_GET_HANDED_RCPT = attrgetter(*HandedRecipient._fields)


def encode_records(records: list[MessageRecord]) -> bytes:
    """The records as the daemon reads them (HandedRecord), marshalled: a third of the
    full records' pickle for the worker, and the daemon builds no dataclasses."""
    get, rcpt = _GET_HANDED, _GET_HANDED_RCPT
    return marshal.dumps([(*get(r), tuple(map(rcpt, r.recipients))) for r in records])


def decode_records(data: bytes) -> list[HandedRecord]:
    make, rcpt = HandedRecord._make, HandedRecipient._make
    return [make((*t[:4], tuple(map(rcpt, t[4])))) for t in marshal.loads(data)]


def _builder(cls: type, names: tuple[str, ...]) -> Callable[[Any], Any]:
    """values -> a frozen dataclass, without __init__'s frozen setattr (3 times the cost)."""
    if "__slots__" in cls.__dict__:
        return lambda values: cls(*values)
    new = object.__new__

    def build(values: Any) -> Any:
        obj = new(cls)
        obj.__dict__.update(zip(names, values, strict=True))
        return obj
    return build


decode_reject = _builder(RejectedAttempt, _REJECT)


# -- the worker's positions ----------------------------------------------------------------


class PrefixedStore:
    """The Store as the worker's sources see it: positions and cursors under their own names
    ("accounting:" + path). A file the worker never saved starts where the daemon stands
    (where the in-process accounting stood before the worker existed)."""

    def __init__(self, store: Any, prefix: str = POSITION_PREFIX) -> None:
        self.store, self.prefix = store, prefix

    def load_positions(self) -> dict[str, Any]:
        plain, own, n = {}, {}, len(self.prefix)
        for path, pos in self.store.load_positions().items():
            if path.startswith(self.prefix):
                own[path[n:]] = replace(pos, path=path[n:])
            else:
                plain[path] = pos
        return {**plain, **own}

    def save_positions(self, positions: Any) -> None:
        self.store.save_positions([replace(p, path=self.prefix + p.path) for p in positions])

    def get_cursor(self, name: str) -> str | None:
        cursor = self.store.get_cursor(self.prefix + name)
        return cursor if cursor is not None else self.store.get_cursor(name)

    def set_cursor(self, name: str, cursor: str) -> None:
        self.store.set_cursor(self.prefix + name, cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# -- `logwatchctl messages` ---------------------------------------------------------------


def record_dict(r: MessageRecord) -> dict[str, Any]:
    """A record as `logwatchctl messages --json` shows it."""
    d = asdict(r)
    d["recipients"] = list(d["recipients"])
    return d


def query(store: Any, now: float, req: dict[str, Any],
          fresh: list[MessageRecord] | None = None) -> dict[str, Any]:
    """`logwatchctl messages` from the store (and this node's records not committed yet)."""
    user, ip, since, limit = req.get("user"), req.get("ip"), req.get("since"), req.get("limit")
    if user is not None and not isinstance(user, str):
        return {"ok": False, "error": "messages: \"user\" must be a string"}
    if ip is not None:
        ip = normalize_ip(ip) if isinstance(ip, str) else None
        if ip is None:
            return {"ok": False, "error": f"messages: not an IP address: {req['ip']!r}"}
    try:
        after = None if since is None else now - parse_duration(since)
    except ValueError as exc:
        return {"ok": False, "error": f"messages: \"since\" {exc}"}
    if limit is None:
        limit = 100
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
        return {"ok": False, "error": "messages: \"limit\" must be 1 to 100000"}
    fresh = [r for r in reversed(fresh or [])
             if (user is None or r.sasl_user == user) and (ip is None or r.client_ip == ip)
             and (after is None or r.done_time >= after)]
    node = store.node_key
    stored = rows.query(store, user, ip, after, limit)
    seen = {r.seq for r in fresh}
    # This node's records not committed yet first, then the store's (the fleet's, on a
    # shared store), each named by the node that accounted it.
    found = ([(node, r) for r in fresh]
             + [(n, r) for n, r in stored if n != node or r.seq not in seen])[:limit]
    return {"ok": True, "messages": [{**record_dict(r), "node": n} for n, r in found]}
