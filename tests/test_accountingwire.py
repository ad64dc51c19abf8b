"""daemon/accountingwire.py: records over the pipe come back equal (and hash equal), frames
split at any cut, the accounting process's positions and cursors live under their own names
(a file it never saved starts where the daemon stands), and `messages` answers from the store."""

from __future__ import annotations

from pathlib import Path

from logwatch.daemon.accountingwire import (
    PrefixedStore,
    decode_record,
    decode_reject,
    encode_record,
    encode_reject,
    frame,
    query,
    split_frames,
)
from logwatch.engine.messages import MessageRecord, Recipient, RejectedAttempt
from logwatch.engine.model import Position
from logwatch.state import accounting as rows
from logwatch.state.store import Store

REC = MessageRecord("mx", "6787E20C3FB", "203.0.113.5", "unknown", "alice", "PLAIN",
                    'a"b> to=<x@y>, status=sent"@evil', (
                        Recipient("c@dest.test", "sent", "2.0.0", "dest[192.0.2.1]:25", ""),
                        Recipient("b@out.example", "deferred", "4.4.1", "none", "o@x")),
                    547, 2, "<1@x>", 1.5, 2.5, 3.5, "delivered", 7)


def test_records_and_rejects_round_trip() -> None:
    back = decode_record(encode_record(REC))
    assert back == REC and hash(back) == hash(REC) and back.recipients[1].orig_to == "o@x"
    att = RejectedAttempt("mx", 1.0, "192.0.2.9", "bad.example", "s@x", "r@y", "554 no", "")
    assert decode_reject(encode_reject(att)) == att
    assert isinstance(encode_record(REC), tuple)       # no dataclass pickles on the pipe


def test_frames_split_at_any_cut() -> None:
    data = frame(("records", [encode_record(REC)], [], 3)) + frame(("stats", {"open": 1}))
    for cut in range(len(data) + 1):
        buf = bytearray(data[:cut])
        got = split_frames(buf)
        buf += data[cut:]
        got += split_frames(buf)
        assert [m[0] for m in got] == ["records", "stats"] and not buf


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
