"""The row path (MessageParser.parse_rows + Correlator.feed_rows) against the reference path
(parse_line per line + feed): the same records, rejects and correlator counters on generated
logs, every rule sample and hostile lines mixed into a real log; and the same rows and parser
counters as parse()."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_correlator import Correlator as ReferenceCorrelator

from logwatch.engine import messages
from logwatch.engine.messages import Correlator, as_row
from logwatch.parsing.messagefast import build_plan, implied, line_safe, without_rare
from logwatch.parsing.messageparse import MessageParser
from logwatch.parsing.rules import Rule, Ruleset, load_ruleset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from messagelog import generate  # noqa: E402

NOW = 1795305600.0           # 2026-11-21 (the generated logs' "Nov 21")
RULESET = load_ruleset([REPO / "rules"], probes=False)
SAMPLES = [s["line"] for r in yaml.safe_load((REPO / "rules" / "postfix-messages.yaml")
                                             .read_text())["rules"] for s in r["samples"]]


def pieces(data: bytes, size: int) -> list[bytes]:
    """Whole lines, about `size` bytes a piece (as the daemon's on_chunk cuts them)."""
    out, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size) + 1 if start + size < len(data) else len(data)
        if end <= start:
            end = data.find(b"\n", start + size) + 1 or len(data)
        out.append(data[start:end])
        start = end
    return out


def same(got: list, want: list) -> bool:
    """Records (or rejects) of the two correlators equal, field by field."""
    return list(map(dataclasses.asdict, got)) == list(map(dataclasses.asdict, want))


def check(data: bytes, size: int = 4096, matcher: str = "auto") -> list:
    """Assert the row path is the reference path on `data`; its records."""
    fast_parser = MessageParser(RULESET, clock=lambda: NOW, matcher=matcher)
    chunk_parser = MessageParser(RULESET, clock=lambda: NOW, matcher=matcher)
    ref_parser = MessageParser(RULESET, clock=lambda: NOW, matcher=matcher)
    fast, ref = Correlator(clock=lambda: NOW), ReferenceCorrelator(clock=lambda: NOW)
    got_records, got_rejects, want_records, want_rejects = [], [], [], []
    for piece in pieces(data, size):
        rows = fast_parser.parse_rows(piece)
        assert rows == [as_row(x) for x in chunk_parser.parse(piece)]
        records, rejects = fast.feed_rows(rows)
        got_records += records
        got_rejects += rejects
        lines = [ref_parser.parse_line(line) for line in piece.split(b"\n")]
        records, rejects = ref.feed([x for x in lines if x is not None])
        want_records += records
        want_rejects += rejects
    assert fast_parser.counters() == chunk_parser.counters()
    assert same(got_records, want_records)
    assert same(got_rejects, want_rejects)
    assert same(fast.sweep(), ref.sweep())
    assert fast.stats() == ref.stats() and fast.next_seq == ref.next_seq
    assert list(fast.recent.items()) == list(ref.recent.items())
    assert sorted(fast.rows(fast.changes()[0])) == sorted(ref.rows(ref.changes()[0]))
    return got_records


@pytest.mark.parametrize(("seed", "window", "size"), [(1, 20, 4096), (2, 3, 700), (3, 200, 65536),
                                                      (4, 50, 1)])
def test_generated_logs(seed: int, window: int, size: int) -> None:
    data = generate(1500, seed=seed, window=window)
    data += generate(200, seed=seed, window=window, complete=False, first=5000)
    assert len(check(data, size)) == 1500


@pytest.mark.parametrize("matcher", ["auto", "re"])
def test_every_rule_sample_alone_and_in_a_log(matcher: str) -> None:
    log = generate(30, seed=9).split(b"\n")
    for i, line in enumerate(SAMPLES):
        check(line.encode() + b"\n", matcher=matcher)
        check(line.encode(), matcher=matcher)                  # no final newline
        mixed = log[:i % 40] + [line.encode()] + log[i % 40:]
        check(b"\n".join(mixed), size=300, matcher=matcher)


def test_odd_lines_go_through_the_reference() -> None:
    odd = [
        "Nov 21 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed \u00e9",     # not ASCII
        "Nov 21 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",
        "Nov 21 10:00:00 mx1 postfix/qmgr[900]:4BX7Y: removed",
        "Feb 30 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",
        "Nov 21 10:00:00 mx1 postfix/qmgr[1][2]: 4BX7Y: removed",
        "2026-11-21T10:00:00+00:00 mx1 postfix/qmgr[900]: 4BX7Y: removed",
        "<22>1 2026-11-21T10:00:00Z mx1 postfix/qmgr 900 - - 4BX7Y: removed",
        "2026-11-21 10:00:02 1VxPit-000MMd-U4 Completed",
        "Nov 21 10:00:00 mx1 postfix/smtpd[1]: 4BX7Y: client=x[1.2.3.999]",   # invalid ip
        "Nov 21 10:00:00 mx1 postfix/smtpd[1]: 4BX7Y: client=x[2001:DB8:0::1]",
        "Nov 21 10:00:00 mx1 postfix/smtpd[1]: 4BX7Y: client=x[1.2.3.4], sasl_username=a,b",
        "Nov 21 10:00:00 mx1 postfix/pickup[1]: 4BX7Y: client=x[1.2.3.4]",
        "Nov 21 10:00:00 mx1 postfix/smtpd[1]: 4BX7Y: client=" + "x" * 9000 + "[1.2.3.4]",
        "Nov 21 10:00:00 mx1 postfix/anvil[1]: " + "x" * 9000 + " reject: ",
        "Nov 21 10:00:00 mx1 dovecot: imap-login: Login: user=<a>, status=",
        "Nov 21 10:00:00 mx1 postfix/qmgr[900]: 4BX7Y: from=<a>, size=1, nrcpt=x (queue active)",
    ]
    for line in odd:
        check(line.encode() + b"\n")
    check(("\n".join(odd) + "\n").encode() + generate(20, seed=5))


# Text a client (or a remote server) chooses, posing as fields, framings and lines.
EVIL = st.lists(st.sampled_from([
    "a", "b@x.example", '"', "\\", "<", ">", ", to=<", ", from=<", "> ", ", size=9",
    ", nrcpt=7 (queue active)", ", relay=x, delay=0, delays=0/0/0/0, dsn=5.0.0, status=bounced (",
    "\t", " ", ")", "(", "; from=<v@x> to=<w@y> proto=ESMTP helo=<h>", "\u00e9", "\r", "\x00",
    ": removed", " Completed", " => ", "A=plain:victim", "sasl_username=root", ",", "[1.2.3.4]",
]), max_size=8).map("".join)
TEMPLATES = [
    "Nov 21 10:00:{s:02d} mx1 postfix/smtpd[1]: {q}: client={e}[192.0.2.{n}], sasl_method=PLAIN, sasl_username={e}",
    "Nov 21 10:00:{s:02d} mx1 postfix/cleanup[2]: {q}: message-id=<{e}>",
    "Nov 21 10:00:{s:02d} mx1 postfix/qmgr[3]: {q}: from=<{e}>, size={n}, nrcpt=1 (queue active)",
    'Nov 21 10:00:{s:02d} mx1 postfix/qmgr[3]: {q}: from=<"{e}"@x>, size={n}, nrcpt=2 (queue active)',
    "Nov 21 10:00:{s:02d} mx1 postfix/smtp[4]: {q}: to=<{e}>, relay=mx[203.0.113.5]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent ({e})",
    'Nov 21 10:00:{s:02d} mx1 postfix/smtp[4]: {q}: to=<"{e}"@x>, orig_to=<{e}>, relay=local, delay=1, delays=0/0/0/1, dsn=5.1.1, status=bounced ({e})',
    "Nov 21 10:00:{s:02d} mx1 postfix/qmgr[3]: {q}: removed",
    "Nov 21 10:00:{s:02d} mx1 postfix/virtual[4]: {q}: to=<a@b>, relay=virtual, delay=1, delays=0/0/0/1, dsn=5.0.0, status={w} (x)",
    "Nov 21 10:00:{s:02d} mx1 postfix/qmgr[3]: {q}: from=<{e}>, status=expired, returned to sender",
    "Nov 21 10:00:{s:02d} mx1 postfix/smtpd[1]: {q}: reject: RCPT from {e}[192.0.2.{n}]: 550 {e}; from=<{e}> to=<{e}> proto=ESMTP helo=<{e}>",
    "Nov 21 10:00:{s:02d} mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.{n}]: 554 no; from=<a@b> to=<{e}> proto=ESMTP helo=<{e}>",
    "Nov 21 10:00:{s:02d} mx2 sendmail[5]: {q}AAAAAAAA: from=<{e}>, size={n}, class=0, nrcpts=1, msgid=<{e}>, relay={e} [192.0.2.{n}]",
    "Nov 21 10:00:{s:02d} mx2 sendmail[5]: {q}AAAAAAAA: to=<{e}>,<b@x>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=1, dsn=2.0.0, stat=Sent ({e})",
    "Nov 21 10:00:{s:02d} mx2 sm-mta[5]: {q}AAAAAAAA: AUTH=server, relay=[192.0.2.{n}], authid={e}, mech=PLAIN, bits=0",
    "2026-11-21 10:00:{s:02d} 1VxPit-000MMd-U4 <= {e} H=(h) [192.0.2.{n}]:1 P=esmtpa A=plain:{e} S={n}",
    "Nov 21 10:00:{s:02d} mx3 exim[6]: 1VxPit-000MMd-U4 => {e} <{e}> R=r T=t",
    "Nov 21 10:00:{s:02d} mx3 exim[6]: 1VxPit-000MMd-U4 Completed",
    "2026-11-21T10:00:{s:02d}.5+01:00 mx1 postfix/qmgr[3]: {q}: removed",
    "<22>1 2026-11-21T10:00:{s:02d}Z mx1 postfix/smtp 4 - [x a=\"{e}\"] {q}: to=<{e}>, relay=local, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (ok)",
    "Nov 21 10:00:{s:02d} imap-login: Info: Login: user=<{e}>, rip=192.0.2.{n}, status=",
    "Nov 21 10:00:{s:02d} mx1 postfix/smtpd[1]{e}: {q}: client=x[192.0.2.{n}]",
    "{e}Nov 21 10:00:{s:02d} mx1 postfix/qmgr[3]: {q}: removed",
]
QIDS = ["41000000001", "41000000002", "4100000000F", "NOQUEUE", "4BX7Y"]
WORDS = ["sent", "bounced", "expired", "undeliverable", "deliverable", "deferred", "xyz"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(TEMPLATES) - 1), EVIL, st.sampled_from(QIDS),
                          st.integers(0, 59), st.integers(0, 260), st.sampled_from(WORDS)),
                min_size=1, max_size=12),
       st.integers(0, 400), st.sampled_from([64, 512, 1 << 20]))
def test_hostile_lines_in_a_real_log(made, where: int, size: int) -> None:
    log = generate(12, seed=7).decode().split("\n")
    for i, (t, evil, qid, second, n, word) in enumerate(made):
        line = TEMPLATES[t].format(e=evil, q=qid, s=second, n=n, w=word).replace("\n", " ")
        log.insert((where + 7 * i) % len(log), line)
    check("\n".join(log).encode("utf-8", "surrogatepass"), size)


def test_a_quote_takes_the_full_regex_and_its_absence_the_plain_one() -> None:
    rules = [r for r in RULESET.message_rules if r.id == "postfix-msg-delivery"]
    plan = build_plan(rules)
    assert plan is not None and plan.plain != plan.match
    line = ('x: 3F2A41C0B7: to=<"x>, relay=none, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent'
            ' (y"@evil.example>, relay=none, delay=1, delays=1/0/0/0, dsn=5.4.4, status=bounced (H)')
    assert plan.plain(line, 3) is None           # the one it must not be given
    m = plan.match(line, 3)
    assert m is not None and m.group(plan.alts[m.lastindex].indexes[13]) == "bounced"
    plain = 'x: 3F2A41C0B7: to=<a@b>, relay=none, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (y)'
    assert plan.plain(plain, 3).groups() == plan.match(plain, 3).groups()
    # A branch all of whose alternatives start with the rare character: never a match.
    assert without_rare('a(?:"x|"y)b', re.compile('a(?:"x|"y)b'))("axb", 0) is None


@pytest.mark.parametrize(("pattern", "safe"), [
    (r"^(?P<qid>\w+): removed$", True),
    (r"(?P<qid>\w+): removed$", False),              # not anchored: search()
    (r"^(?P<qid>\w+): (?<=: )removed$", False),      # a look-behind sees the frame
    (r"^(?P<qid>\w+): \Aremoved$", False),
    (r"^(?:x|^)(?P<qid>\w+)$", False),
    (r"^(?P<qid>\w+) (?P=qid)$", False),             # a back-reference: renamed groups
    (r"^(?P<qid>\w+)(?i:x)$", False),
    (r"^(?P<qid>\w+) (?=\S)x$", True),
])
def test_line_safe(pattern: str, safe: bool) -> None:
    rule = Rule(id="r", kind="message-done", service=None, programs=("p",), prefilters=(b"x",),
                regex=re.compile(pattern))
    assert line_safe(rule) is safe
    assert (build_plan([rule]) is not None) is safe


def test_the_oldest_recent_queue_id_leaves_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import reference_correlator

    monkeypatch.setattr(messages, "RECENT_MAX", 50)
    monkeypatch.setattr(reference_correlator, "RECENT_MAX", 50)
    # a queue id closed twice keeps its first place (window 1: each message whole)
    data = generate(120, seed=3, window=1) + generate(30, seed=3, window=1)
    assert len(check(data)) == 150


@pytest.mark.parametrize(("pattern", "prefilter", "implied_"), [
    (r"^(?P<qid>\w+): removed$", b": removed", True),
    (r"^(?P<qid>\w+): removed$", b"removed", True),
    (r"^(?P<qid>\w+)(?:: removed)?$", b": removed", False),     # optional
    (r"^(?P<qid>\w+)(?:: removed|x)$", b": removed", False),    # one branch
    (r"^(?P<qid>\w+): (?P<w>removed)$", b": removed", False),   # not one run: not known
    (r"^(?P<qid>\w+): removed$", b"elsewhere", False),
])
def test_a_prefilter_implied_by_the_pattern(pattern: str, prefilter: bytes, implied_: bool) -> None:
    rule = Rule(id="r", kind="message-done", service=None, programs=("postfix/qmgr",),
                prefilters=(prefilter,), regex=re.compile(pattern))
    assert implied(rule) is implied_
    # A rule matching a line without its prefilter: the reference path never tries it.
    line = b"Nov 21 10:00:00 mx1 postfix/qmgr[1]: AAAAA: removed\n"
    fast, ref = (MessageParser(Ruleset([rule]), clock=lambda: NOW) for _ in range(2))
    assert fast.parse_rows(line) == [as_row(x) for x in ref.parse(line)]
    assert fast.counters() == ref.counters()
