"""The correlator (engine/messages.py): real log lines through the message parser, then
correlated: out-of-order lines, a missing client= line, expiry, the cap, duplicate `removed`,
queue-id reuse, several hosts, Sendmail and Exim; and its state saved and loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeClock

from logwatch.engine.messages import Correlator, MessageRecord, split_recipients, status_word
from logwatch.parsing.messageparse import MessageParser
from logwatch.parsing.rules import load_ruleset

REPO = Path(__file__).resolve().parents[1]
NOW = 1795305600.0            # 2026-11-22 00:00 UTC: "Nov 21" lies in the past
RULESET = load_ruleset([REPO / "rules"], probes=False)


def parse(*lines: str) -> list:
    parser = MessageParser(RULESET, clock=lambda: NOW)
    return parser.parse("".join(f"{line}\n" for line in lines).encode())


def message(qid: str, host: str = "mx1", t: str = "10:00:0", user: str = "alice",
            rcpts: tuple[str, ...] = ("bob@example.com",), status: str = "sent") -> list[str]:
    p = f"Nov 21 {t}1 {host} postfix"
    lines = [f"{p}/smtpd[1]: {qid}: client=laptop.example.org[192.0.2.10], sasl_method=PLAIN, "
             f"sasl_username={user}",
             f"{p}/cleanup[2]: {qid}: message-id=<{qid}@laptop.example.org>",
             f"{p}/qmgr[3]: {qid}: from=<{user}@example.org>, size=1234, nrcpt={len(rcpts)} "
             "(queue active)"]
    dsn = {"sent": "2.0.0", "bounced": "5.1.1", "deferred": "4.4.1"}[status]
    lines += [f"{p}/smtp[4]: {qid}: to=<{r}>, relay=mx.example.com[203.0.113.5]:25, delay=1, "
              f"delays=0/0/0/1, dsn={dsn}, status={status} (reply)" for r in rcpts]
    lines.append(f"Nov 21 {t}2 {host} postfix/qmgr[3]: {qid}: removed")
    return lines


@pytest.fixture
def corr(clock: FakeClock) -> Correlator:
    clock.now = NOW
    return Correlator(max_open=1000, max_age=86400.0, clock=clock)


def test_one_message_is_one_record_with_every_field(corr: Correlator) -> None:
    records, rejects = corr.feed(parse(*message("4Bx7Yq1kR2z9v", rcpts=("a@x.example", "b@y.example"))))
    assert rejects == []
    (r,) = records
    assert isinstance(r, MessageRecord)
    assert (r.host, r.queue_id, r.client_ip, r.client_name) == (
        "mx1", "4Bx7Yq1kR2z9v", "192.0.2.10", "laptop.example.org")
    assert (r.sasl_user, r.sasl_method, r.sender, r.size, r.nrcpt) == (
        "alice", "PLAIN", "alice@example.org", 1234, 2)
    assert [(x.address, x.status, x.dsn) for x in r.recipients] == [
        ("a@x.example", "sent", "2.0.0"), ("b@y.example", "sent", "2.0.0")]
    assert r.message_id == "<4Bx7Yq1kR2z9v@laptop.example.org>"
    assert r.outcome == "delivered" and r.seq == 1
    assert 0 < r.connect_time <= r.eom_time < r.done_time
    assert corr.open == {}


def test_out_of_order_lines_make_the_same_record(corr: Correlator, clock: FakeClock) -> None:
    lines = message("3F2A41C0B7")
    shuffled = [lines[2], lines[3], lines[1], lines[0], lines[4]]   # removed stays last
    (r,) = corr.feed(parse(*shuffled))[0]
    (ref,) = Correlator(clock=clock).feed(parse(*lines))[0]
    assert r == ref


def test_a_missing_client_line_leaves_the_client_empty(corr: Correlator) -> None:
    (r,) = corr.feed(parse(*message("3F2A41C0B7")[1:]))[0]
    assert (r.client_ip, r.sasl_user, r.connect_time) == ("", "", 0.0)
    assert r.sender == "alice@example.org" and r.outcome == "delivered"


def test_bounces_and_partial_deliveries(corr: Correlator) -> None:
    (b,) = corr.feed(parse(*message("AAAAA1", status="bounced")))[0]
    assert b.outcome == "bounced" and b.recipients[0].dsn == "5.1.1"
    lines = message("AAAAA2", rcpts=("a@x.example", "b@x.example"))
    lines.insert(4, lines[4].replace("dsn=2.0.0, status=sent", "dsn=5.1.1, status=bounced")
                 .replace("a@x.example", "b@x.example"))
    del lines[5]
    (p,) = corr.feed(parse(*lines))[0]
    assert p.outcome == "partial"


def test_a_deferred_then_sent_recipient_counts_once(corr: Correlator) -> None:
    lines = message("AAAAA3", status="deferred")
    lines.insert(-1, message("AAAAA3")[3])
    (r,) = corr.feed(parse(*lines))[0]
    assert [x.status for x in r.recipients] == ["sent"]


def test_duplicate_removed_is_counted_not_recorded(corr: Correlator) -> None:
    lines = message("AAAAA4")
    records, _ = corr.feed(parse(*lines, lines[-1]))
    assert len(records) == 1 and corr.counts["duplicate_done"] == 1
    records, _ = corr.feed(parse("Nov 21 10:00:03 mx1 postfix/qmgr[3]: ZZZZZ9: removed"))
    assert records == [] and corr.counts["unknown_done"] == 1


def test_a_late_line_after_removed_opens_nothing(corr: Correlator) -> None:
    lines = message("AAAAA5")
    corr.feed(parse(*lines))
    assert corr.feed(parse(lines[3]))[0] == [] and corr.open == {}
    assert corr.counts["late"] == 1


def test_queue_id_reuse_closes_the_unfinished_one(corr: Correlator) -> None:
    first = message("AAAAA6", user="alice")[:3]          # never removed
    second = message("AAAAA6", user="bob", t="10:00:1")
    records, _ = corr.feed(parse(*first, *second))
    assert [(r.sasl_user, r.outcome) for r in records] == [("alice", "incomplete"),
                                                          ("bob", "delivered")]
    # Reused after a proper removal: a new message, nothing incomplete.
    records, _ = corr.feed(parse(*message("AAAAA6", user="carol", t="10:00:2")))
    assert [(r.sasl_user, r.outcome) for r in records] == [("carol", "delivered")]


def test_same_queue_id_on_two_hosts_are_two_messages(corr: Correlator) -> None:
    a, b = message("AAAAA7", host="mx1", user="alice"), message("AAAAA7", host="mx2", user="bob")
    interleaved = [line for pair in zip(a, b, strict=True) for line in pair]
    records, _ = corr.feed(parse(*interleaved))
    assert sorted((r.host, r.sasl_user) for r in records) == [("mx1", "alice"), ("mx2", "bob")]


def test_expiry_by_log_time_and_incomplete_ones_dropped(corr: Correlator,
                                                        clock: FakeClock) -> None:
    queued = message("AAAAA8")[:3]                      # in the queue, never delivered
    aborted = message("AAAAA9")[:1]                     # a client= line only
    corr.feed(parse(*queued, *aborted))
    assert corr.sweep() == []                           # log time has not moved
    corr.feed(parse("Nov 21 12:00:00 mx1 postfix/qmgr[3]: ZZZZZ1: removed"))
    assert corr.sweep() == [] and corr.counts["aborted"] == 1
    assert list(corr.open) == ["mx1 AAAAA8"]
    # A day later (the age limit) the queued one is written as expired.
    corr.feed(parse("Nov 22 10:00:02 mx1 postfix/qmgr[3]: ZZZZZ2: removed"))
    clock.now = NOW + 2 * 86400
    (r,) = corr.sweep()
    assert (r.queue_id, r.outcome, r.sasl_user) == ("AAAAA8", "expired", "alice")


def test_expiry_never_runs_ahead_of_the_clock(corr: Correlator, clock: FakeClock) -> None:
    corr.feed(parse(*message("AAAAB1")[:3]))
    corr.newest = NOW + 10 * 86400                      # a line dated far in the future
    assert corr.sweep() == []


def test_postfix_expired_returned_to_sender(corr: Correlator) -> None:
    lines = message("AAAAB2", status="deferred")[:-1]
    lines += ["Nov 21 10:00:02 mx1 postfix/qmgr[3]: AAAAB2: from=<alice@example.org>, "
              "status=expired, returned to sender",
              "Nov 21 10:00:02 mx1 postfix/qmgr[3]: AAAAB2: removed"]
    (r,) = corr.feed(parse(*lines))[0]
    assert r.outcome == "expired"


def test_the_cap_drops_the_oldest_and_counts(clock: FakeClock) -> None:
    clock.now = NOW
    corr = Correlator(max_open=3, clock=clock)
    for i in range(5):
        corr.feed(parse(*message(f"CAP0{i}")[:3]))
    assert list(corr.open) == ["mx1 CAP02", "mx1 CAP03", "mx1 CAP04"]
    assert corr.counts["dropped_cap"] == 2
    (r,) = corr.feed(parse(message("CAP04")[-1]))[0]
    assert r.queue_id == "CAP04"


def test_rejects_noqueue_and_of_a_queued_message(corr: Correlator) -> None:
    _, rejects = corr.feed(parse(
        "Nov 21 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: "
        "554 5.7.1 <x@elsewhere.example>: Relay access denied; from=<a@b.example> "
        "to=<x@elsewhere.example> proto=ESMTP helo=<h>"))
    (a,) = rejects
    assert (a.client_ip, a.sender, a.recipient, a.sasl_user) == (
        "192.0.2.9", "a@b.example", "x@elsewhere.example", "")
    lines = message("AAAAB3")[:3] + [
        "Nov 21 10:00:02 mx1 postfix/smtpd[1]: AAAAB3: milter-reject: END-OF-MESSAGE from "
        "laptop.example.org[192.0.2.10]: 5.7.1 Spam; from=<alice@example.org> "
        "to=<bob@example.com> proto=ESMTP helo=<laptop>"]
    records, rejects = corr.feed(parse(*lines))
    assert rejects[0].sasl_user == "alice"
    assert [r.outcome for r in records] == ["rejected"]


def test_sendmail_message_closes_with_its_last_recipient(corr: Correlator) -> None:
    records, _ = corr.feed(parse(
        "Nov  3 11:35:30 mx2 sendmail[1]: rA37ZTSC026254: AUTH=server, relay=laptop.example.org "
        "[192.0.2.10], authid=alice, mech=PLAIN, bits=0",
        "Nov  3 11:35:30 mx2 sendmail[1]: rA37ZTSC026254: from=<alice@example.org>, size=2048, "
        "class=0, nrcpts=2, msgid=<m@x>, proto=ESMTPA, daemon=MTA, relay=laptop.example.org "
        "[192.0.2.10]",
        "Nov  3 11:35:31 mx2 sendmail[2]: rA37ZTSC026254: to=<bob@example.com>,<carol@example.net>, "
        "delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=150387, relay=mx.example.com. "
        "[203.0.113.5], dsn=2.0.0, stat=Sent (OK id=1abc)"))
    (r,) = records
    assert (r.sasl_user, r.client_ip, r.sender, r.nrcpt) == ("alice", "192.0.2.10",
                                                             "alice@example.org", 2)
    assert [(x.address, x.status) for x in r.recipients] == [("bob@example.com", "sent"),
                                                            ("carol@example.net", "sent")]


def test_exim_message(corr: Correlator) -> None:
    records, _ = corr.feed(parse(
        "2026-11-21 10:00:00 1VxPit-000MMd-U4 <= alice@example.org H=laptop.example.org "
        "(laptop) [192.0.2.10]:50412 P=esmtpsa A=dovecot_plain:alice S=1834 id=m@x",
        "2026-11-21 10:00:01 1VxPit-000MMd-U4 => bob@example.com R=dnslookup T=remote_smtp "
        "H=mx.example.com [203.0.113.5]",
        "2026-11-21 10:00:01 1VxPit-000MMd-U4 ** nobody@example.net R=dnslookup: 550 unknown",
        "2026-11-21 10:00:02 1VxPit-000MMd-U4 Completed"))
    (r,) = records
    assert (r.sasl_user, r.client_ip, r.size, r.outcome) == ("alice", "192.0.2.10", 1834,
                                                             "partial")


def test_injected_fields_stay_in_their_field(corr: Correlator) -> None:
    evil = '"a@b> to=<x@y>, status=sent client=z[6.6.6.6]"@evil.example'
    lines = [
        "Nov 21 10:00:01 mx1 postfix/smtpd[1]: INJ01: client=unknown[198.51.100.9]",
        f"Nov 21 10:00:01 mx1 postfix/qmgr[3]: INJ01: from=<{evil}>, size=10, nrcpt=1 "
        "(queue active)",
        f"Nov 21 10:00:01 mx1 postfix/smtp[4]: INJ01: to=<{evil}>, relay=none, delay=1, "
        "delays=0/0/0/1, dsn=5.4.4, status=bounced (Host not found)",
        "Nov 21 10:00:02 mx1 postfix/qmgr[3]: INJ01: removed"]
    (r,) = corr.feed(parse(*lines))[0]
    assert (r.client_ip, r.sender, r.sasl_user) == ("198.51.100.9", evil, "")
    assert [(x.address, x.status) for x in r.recipients] == [(evil, "bounced")]


def test_state_saved_and_loaded_gives_the_same_records(corr: Correlator,
                                                       clock: FakeClock) -> None:
    lines = message("SAVE1", rcpts=("a@x.example", "b@x.example"))
    corr.feed(parse(*lines[:4]))
    keys, deleted = corr.changes()
    rows = list(corr.rows(keys))
    corr.saved(keys)
    assert deleted == [] and len(rows) == 1
    fresh = Correlator(clock=clock)
    fresh.load(rows, corr.next_seq)
    rest = parse(*lines[4:])
    assert fresh.feed(rest)[0] == corr.feed(rest)[0]
    _rows, deleted = corr.changes()
    assert deleted == [("mx1", "SAVE1")]      # saved once, closed since: deleted


def test_helpers() -> None:
    assert split_recipients('<a@x>,<"b,c"@y>,d') == ["a@x", '"b,c"@y', "d"]
    assert [status_word(s, d) for s, d in (("sent", ""), ("=>", ""), ("**", ""),
                                           ("Sent (ok)", "2.0.0"), ("User unknown", "5.1.1"),
                                           ("Deferred: x", "4.0.0"))] == [
        "sent", "sent", "bounced", "sent", "bounced", "deferred"]
