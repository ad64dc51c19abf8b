"""The accounting's fast paths give what the plain ones give: a batch of stats lines checked in
one pass (format_records) equals the lines one by one, escaped ones included; the compact JSON
encoder equals json.dumps; a record closed by the correlator equals MessageRecord(...)."""

from __future__ import annotations

import json

import pytest

from logwatch.daemon.statslog import format_record, format_records
from logwatch.engine.messages import Correlator, MessageRecord, Recipient
from logwatch.state.accounting import dumps, record_from_json, record_json

T = 1795305600.0


def record(seq: int, sender: str = "alice@example.org",
           rcpts: tuple[str, ...] = ("bob@example.com",), **kw: object) -> MessageRecord:
    values = dict(
        host="mx1", queue_id=f"Q{seq:05d}", client_ip="192.0.2.10",
        client_name="laptop.example.org", sasl_user="alice", sasl_method="PLAIN",
        sender=sender, recipients=tuple(Recipient(r, "sent", "2.0.0", "mx", "") for r in rcpts),
        size=1234, nrcpt=len(rcpts), message_id="<m@x>", connect_time=T, eom_time=T + 1,
        done_time=T + 2, outcome="delivered", seq=seq)
    values.update(kw)
    return MessageRecord(**values)  # type: ignore[arg-type]


HOSTILE = ["a\tb@x", "a\nb@x", "a\\b@x", "a\x00b", "a\x7fb", "a\x85b", "a\u2028b", "ä@x",
           "a\rb", "\t", "\\t"]


def test_a_plain_batch_is_the_lines_one_by_one() -> None:
    batch = [record(1), record(2, rcpts=()), record(3, rcpts=("a@x", "b@y", "c@z")),
             record(4, sasl_user="", connect_time=0.0, eom_time=0.0)]
    assert format_records(batch) == "".join(map(format_record, batch)).encode()
    assert format_records([]) == b""


@pytest.mark.parametrize("evil", HOSTILE)
@pytest.mark.parametrize("where", ["sender", "rcpt", "host", "message_id", "sasl_user"])
def test_a_batch_with_one_value_to_escape_is_escaped_like_one_line(evil: str, where: str) -> None:
    if where == "sender":
        bad = record(2, sender=evil)
    elif where == "rcpt":
        bad = record(2, rcpts=("ok@x", evil))
    else:
        bad = record(2, **{where: evil})
    batch = [record(1), bad, record(3)]
    data = format_records(batch)
    assert data == "".join(map(format_record, batch)).encode("utf-8", "backslashreplace")
    assert data.count(b"\n") == 3
    assert [line.count(b"\t") for line in data.split(b"\n")[:-1]] == [16, 16 + 2 * (
        where == "rcpt"), 16]


def test_the_compact_encoder_is_json_dumps() -> None:
    for value in ([1, "a\u00e9\"\\\n", [1.5, 2, None, True], 0.0, float("inf"), -3],
                  ["x" * 1000, [[], [[]]], 1795305600.123456]):
        assert dumps(value) == json.dumps(value, separators=(",", ":"))
    r = record(9, rcpts=("a@x", "b@y"))
    assert record_from_json(record_json(r)) == r


def test_a_closed_record_equals_one_made_by_its_constructor() -> None:
    c = Correlator(clock=lambda: T + 10)
    f = {"qid": "ABCDE", "ip": "192.0.2.10", "name": "h.example", "user": "alice",
         "method": "PLAIN"}
    records, _ = c.feed([
        ("message-start", T, "mx1", "postfix/smtpd", f, "r"),
        ("message", T + 1, "mx1", "postfix/qmgr",
         {"qid": "ABCDE", "sender": "s@x", "size": "12", "nrcpt": "1"}, "r"),
        ("delivery", T + 2, "mx1", "postfix/smtp",
         {"qid": "ABCDE", "rcpt": "r@y", "dsn": "2.0.0", "status": "sent", "relay": "mx",
          "orig_to": None}, "r"),
        ("message-done", T + 3, "mx1", "postfix/qmgr", {"qid": "ABCDE"}, "r")])
    expected = MessageRecord("mx1", "ABCDE", "192.0.2.10", "h.example", "alice", "PLAIN", "s@x",
                             (Recipient("r@y", "sent", "2.0.0", "mx", ""),), 12, 1, "", T,
                             T + 1, T + 3, "delivered", 1)
    assert records == [expected]
    assert records[0].__dict__ == expected.__dict__
    with pytest.raises(AttributeError):
        records[0].seq = 5  # type: ignore[misc]


ODD_HEADS = [
    b"Nov 21 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",
    b"Nov 21 10:00:00 mx1 postfix/qmgr: 4BX7Y: removed",               # no pid
    b"Nov  3 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",          # a one-digit day
    b"Nov 21 10:00:00 mx1 postfix/qmgr[]: 4BX7Y: removed",
    b"Nov 21 10:00:00 mx1 postfix/qmgr[9x]: 4BX7Y: removed",
    b"Nov 21 10:00:00 mx1 postfix/qmgr[1][2]: 4BX7Y: removed",
    b"Nov 21 10:00:00 mx1 postfix/qmgr[900]:4BX7Y: removed",           # no blank after ':'
    b"Nov 21 10:00:00 mx1 postfix/qmgr[900]:  4BX7Y: removed",         # two blanks
    b"Nov 21 10:00:00 mx1: postfix/qmgr[900]: 4BX7Y: removed",
    b"Nov 21 10:00:00 2001:db8::1 postfix/qmgr[900]: 4BX7Y: removed",  # a host with colons
    b"Nov 21 10:00:00 mx1 postfix/pickup[900]: 4BX7Y: removed",        # not the rule's program
    b"Nov 21 10:00:00 mx1 postfix/qmgr[\xd9\xa3]: 4BX7Y: removed",     # an Arabic-Indic digit
    b"900]: 4BX7Y: removed",
    b"Nov 21 99:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",          # no such time
    b"Feb 30 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",          # no such date
]


@pytest.mark.parametrize("line", ODD_HEADS)
def test_odd_heads_give_what_the_reference_path_gives(line: bytes) -> None:
    from pathlib import Path

    from logwatch.parsing.messageparse import MessageLine, MessageParser
    from logwatch.parsing.rules import load_ruleset

    ruleset = load_ruleset([Path(__file__).resolve().parents[1] / "rules"], probes=False)
    ref = MessageParser(ruleset, clock=lambda: T).parse_line(line)
    for matcher in ("auto", "re"):
        parser = MessageParser(ruleset, clock=lambda: T, matcher=matcher)
        # twice: the second time from the memoised head
        for _ in range(2):
            got = [MessageLine._make(x) for x in parser.parse(line + b"\n")]
            assert got == ([ref] if ref is not None else [])
            mixed = [MessageLine._make(x) for x in parser.parse(
                b"Nov 21 10:00:00 mx1 postfix/qmgr[900]: AAAAA: removed\n" + line + b"\n")]
            assert mixed[1:] == got and mixed[0].fields["qid"] == "AAAAA"


def test_canonical_ipv4_text_is_what_normalize_ip_gives() -> None:
    from logwatch.parsing.events import IP_CACHE, normalize_ip
    from logwatch.parsing.messageparse import _CANONICAL_V4

    probes = [f"{a}.{b}.{c}.{d}" for a in (0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255)
              for b in (0, 255) for c in (7,) for d in (0, 42)]
    probes += ["256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1.2.3.04", "1.2.3.4 ", "٣.1.1.1",
               "::ffff:1.2.3.4", "2001:db8::1", "1.2.3.-4", "300.300.300.300", "1..2.3"]
    for text in probes:
        IP_CACHE.clear()
        if _CANONICAL_V4.fullmatch(text):
            assert normalize_ip(text) == text, text
        else:
            assert normalize_ip(text) != text or text.count(".") != 3, text
