"""The accounting's rows in the store (tables acct_open, acct_records, acct_meta): portable SQL
only, written inside the caller's transaction (the one that saves the read positions). Every
row carries its node (store.node_key): on a shared store each node numbers its own records."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

from logwatch.engine.messages import MessageRecord, Recipient
from logwatch.state.store import Store

NEXT_SEQ = "next_seq"          # the correlator's next sequence number
WRITTEN_SEQ = "written_seq"    # every record up to this one is in the stats log


def _compact_json() -> Callable[[Any], str]:
    """json.dumps(obj, separators=(",", ":")), without the encoder json.dumps builds anew
    for each call with non-default separators (a third of a record's cost)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:                                # pragma: no cover - no C accelerator
        return json.JSONEncoder(separators=(",", ":")).encode
    encode = make(None, None, json.encoder.encode_basestring_ascii, None, ":", ",",
                  False, False, True)
    return lambda obj: "".join(encode(obj, 0))


dumps = _compact_json()


def record_json(r: MessageRecord) -> str:
    """A record as a JSON list in MessageRecord's field order (attributes by name: fast)."""
    return dumps([
        r.host, r.queue_id, r.client_ip, r.client_name, r.sasl_user, r.sasl_method, r.sender,
        [[x.address, x.status, x.dsn, x.relay, x.orig_to] for x in r.recipients], r.size,
        r.nrcpt, r.message_id, r.connect_time, r.eom_time, r.done_time, r.outcome, r.seq])


def record_from_json(text: str) -> MessageRecord:
    v = json.loads(text)
    v[7] = tuple(Recipient(*map(str, x)) for x in v[7])
    return MessageRecord(*v)


def save(store: Store, rows: Iterable[tuple[str, str, Any]], deleted: Iterable[tuple[str, str]],
         records: Iterable[MessageRecord], next_seq: int, written_seq: int) -> None:
    """Open messages changed or closed, new records and the sequence marks, in one
    transaction (the caller's, with the positions)."""
    db, node = store.db, store.node_key
    with store.transaction():
        db.executemany("DELETE FROM acct_open WHERE node = ? AND host = ? AND queue_id = ?",
                       ((node, h, q) for h, q in deleted))
        db.executemany(
            "INSERT INTO acct_open (node, host, queue_id, state) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (node, host, queue_id) DO UPDATE SET state = excluded.state",
            ((node, h, q, dumps(s)) for h, q, s in rows))
        _insert_records(store, records)
        set_marks(store, next_seq=next_seq, written_seq=written_seq)


_INSERT_RECORDS = ("INSERT INTO acct_records (node, seq, done_time, sasl_user, client_ip, record) "
                   "VALUES {} ON CONFLICT (node, seq) DO NOTHING")
_ROWS_PER_STATEMENT = 100        # SQLite: this many rows per INSERT (600 parameters)
_INSERT_ONE = _INSERT_RECORDS.format("(?, ?, ?, ?, ?, ?)")
_INSERT_MANY = _INSERT_RECORDS.format(", ".join(["(?, ?, ?, ?, ?, ?)"] * _ROWS_PER_STATEMENT))
_SEQ, _DONE, _USER, _IP = (attrgetter(name) for name in ("seq", "done_time", "sasl_user",
                                                          "client_ip"))


def _insert_records(store: Store, records: Iterable[MessageRecord]) -> None:
    """The records' rows, in order; on SQLite a hundred rows per statement (a third less
    time per row than executemany, the same rows in the same order)."""
    records = list(records)
    rows = list(zip(repeat(store.node_key), map(_SEQ, records), map(_DONE, records),
                    map(_USER, records), map(_IP, records), map(record_json, records)))
    db, start = store.db, 0
    if not store.shared:
        whole = len(rows) - len(rows) % _ROWS_PER_STATEMENT
        for start in range(0, whole, _ROWS_PER_STATEMENT):
            db.execute(_INSERT_MANY, list(chain.from_iterable(
                rows[start:start + _ROWS_PER_STATEMENT])))
        start = whole
    db.executemany(_INSERT_ONE, rows[start:])


def set_marks(store: Store, **marks: int) -> None:
    with store.transaction():
        store.db.executemany(
            "INSERT INTO acct_meta (node, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (node, name) DO UPDATE SET value = excluded.value",
            ((store.node_key, name, value) for name, value in marks.items()))


def marks(store: Store) -> dict[str, int]:
    return {name: int(value) for name, value in store.db.execute(
        "SELECT name, value FROM acct_meta WHERE node = ?", (store.node_key,))}


def load_open(store: Store) -> list[tuple[str, str, Any]]:
    return [(h, q, json.loads(s)) for h, q, s in store.db.execute(
        "SELECT host, queue_id, state FROM acct_open WHERE node = ?", (store.node_key,))]


def records_after(store: Store, seq: int) -> list[MessageRecord]:
    """This node's records with a higher seq, in order (those its stats log may lack)."""
    return [record_from_json(text) for (text,) in store.db.execute(
        "SELECT record FROM acct_records WHERE node = ? AND seq > ? ORDER BY seq",
        (store.node_key, seq))]


def prune(store: Store, before: float, written_seq: int) -> int:
    """Forget this node's records done before `before` that its stats log holds."""
    with store.transaction():
        cur = store.db.execute("DELETE FROM acct_records WHERE node = ? AND done_time < ? "
                               "AND seq <= ?", (store.node_key, before, written_seq))
    return cur.rowcount


def query(store: Store, user: str | None = None, ip: str | None = None,
          since: float | None = None, limit: int = 100) -> list[tuple[str, MessageRecord]]:
    """The whole fleet's newest records first, (node, record), filtered by SASL user,
    client IP and done time."""
    where, args = [], []
    for column, value in (("sasl_user = ?", user), ("client_ip = ?", ip),
                          ("done_time >= ?", since)):
        if value is not None:
            where.append(column)
            args.append(value)
    sql = "SELECT node, record FROM acct_records"
    if where:
        sql += " WHERE " + " AND ".join(where)
    # One machine: its sequence is the order; a fleet's sequences are per node.
    sql += " ORDER BY " + ("done_time DESC, seq DESC" if store.shared else "seq DESC") + " LIMIT ?"
    return [(node, record_from_json(text))
            for node, text in store.db.execute(sql, (*args, limit))]
