"""daemon/accountingwire.py: records over the pipe come back equal (and hash equal), frames
split at any cut, the accounting process's positions and cursors live under their own names
(a file it never saved starts where the daemon stands), and `messages` answers from the store."""

from __future__ import annotations

import sys
from pathlib import Path

from logwatch.daemon.accountingwire import (
    HandedRecord,
    PrefixedStore,
    chunk_head,
    decode_records,
    decode_reject,
    encode_records,
    encode_reject,
    frame,
    query,
    split_frames,
)
from logwatch.daemon.fleetrisk import risk_items
from logwatch.engine.messages import MessageRecord, Recipient, RejectedAttempt
from logwatch.engine.model import Position, SuspensionAdded
from logwatch.state import accounting as rows
from logwatch.state.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_records_fastpaths import burst, engine  # noqa: E402

REC = MessageRecord("mx", "6787E20C3FB", "203.0.113.5", "unknown", "alice", "PLAIN",
                    'a"b> to=<x@y>, status=sent"@evil', (
                        Recipient("c@dest.test", "sent", "2.0.0", "dest[192.0.2.1]:25", ""),
                        Recipient("b@out.example", "deferred", "4.4.1", "none", "o@x")),
                    547, 2, "<1@x>", 1.5, 2.5, 3.5, "delivered", 7)


def test_records_and_rejects_round_trip() -> None:
    [back] = decode_records(encode_records([REC]))
    assert isinstance(back, HandedRecord)
    for name in ("client_ip", "sasl_user", "done_time", "seq"):
        assert getattr(back, name) == getattr(REC, name)
    assert [(r.address, r.status, r.dsn) for r in back.recipients] == [
        (r.address, r.status, r.dsn) for r in REC.recipients]
    assert decode_records(encode_records([])) == []
    att = RejectedAttempt("mx", 1.0, "192.0.2.9", "bad.example", "s@x", "r@y", "554 no", "")
    assert decode_reject(encode_reject(att)) == att


def test_handed_records_are_whole_records_to_the_daemon() -> None:
    """The risk engine, the counts and the fleet's risk items come out the same from the
    handed records as from whole ones (all that the daemon does with them)."""
    items = burst()
    records = [i for i in items if isinstance(i, MessageRecord)]
    handed = iter(decode_records(encode_records(records)))
    slim = [next(handed) if isinstance(i, MessageRecord) else i for i in items]
    whole, lean = engine(), engine()
    effects = whole.account_batch(items)
    assert any(isinstance(e, SuspensionAdded) for e in effects)
    assert lean.account_batch(slim) == effects
    assert whole.accounts.account_rows() == lean.accounts.account_rows()
    assert whole.accounts.stats() == lean.accounts.stats()
    assert whole.counts.drain(float("inf")) == lean.counts.drain(float("inf"))
    assert risk_items(records=slim) == risk_items(records=items)


def test_frames_split_at_any_cut() -> None:
    chunk = b"Nov 21 10:00:01 mx1 postfix/smtpd[1]: \x80\x00\xff\n" * 3
    data = (frame(("records", encode_records([REC]), [], 3)) + chunk_head(7, chunk) + chunk
            + frame(("stats", {"open": 1})) + chunk_head(8, b"") + frame(("chunk", 9, b"x")))
    for cut in range(len(data) + 1):
        buf = bytearray(data[:cut])
        got = split_frames(buf)
        buf += data[cut:]
        got += split_frames(buf)
        assert [m[0] for m in got] == ["records", "chunk", "stats", "chunk", "chunk"]
        assert got[1] == ("chunk", 7, chunk) and got[3] == ("chunk", 8, b"") and not buf
        assert type(got[1][2]) is bytes and got[4] == ("chunk", 9, b"x")


def test_positions_and_cursors_under_their_own_names(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.save_positions([Position("/var/log/mail.log", 1, 2, 300, "ab"),
                          Position("/var/log/other.log", 5, 2, 10, "cd")])
    store.set_cursor("journal", "daemon-cursor")
    mine = PrefixedStore(store)
    # Never saved by the accounting process: where the daemon stands.
    assert mine.load_positions()["/var/log/mail.log"].offset == 300
    assert mine.get_cursor("journal") == "daemon-cursor"
    mine.save_positions([Position("/var/log/mail.log", 1, 2, 120, "ab")])
    mine.set_cursor("journal", "own-cursor")
    loaded = mine.load_positions()
    assert loaded["/var/log/mail.log"] == Position("/var/log/mail.log", 1, 2, 120, "ab")
    assert loaded["/var/log/other.log"].offset == 10
    assert mine.get_cursor("journal") == "own-cursor"
    # The daemon's own are untouched.
    assert store.load_positions()["/var/log/mail.log"].offset == 300
    assert store.get_cursor("journal") == "daemon-cursor"
    store.close()


def test_messages_query_reads_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with store.transaction():
        rows.save(store, [], [], [REC], 8, 0)
    found = query(store, 10.0, {"user": "alice"})
    assert found["ok"] and [m["queue_id"] for m in found["messages"]] == ["6787E20C3FB"]
    assert query(store, 10.0, {"user": "bob"}) == {"ok": True, "messages": []}
    assert not query(store, 10.0, {"ip": "nope"})["ok"]
    store.close()
