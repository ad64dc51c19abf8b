"""The message rules (rules/postfix-messages.yaml) through the message parser: every sample on
the fast path (each matcher) and the reference path, the two paths equal on a generated log
and on odd framings, the hostile probes within budget, and injected fields."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from matchers import MATCHERS

from logwatch.parsing.messageparse import MessageLine, MessageParser
from logwatch.parsing.rulecheck import LINE_BUDGET, _differs_message, worst_hostile
from logwatch.parsing.rules import Ruleset, load_rule_file, load_ruleset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from messagelog import generate  # noqa: E402

NOW = 1795305600.0
FILE = REPO / "rules" / "postfix-messages.yaml"
RULES = load_rule_file(FILE)
RULESET = load_ruleset([REPO / "rules"], probes=False)
CASES = [(rule, s["line"], s["expect"]) for rule in RULES
         for s in {r["id"]: r for r in yaml.safe_load(FILE.read_text())["rules"]}[rule.id]["samples"]]


def lines_of(parser: MessageParser, text: str) -> list[MessageLine]:
    return [MessageLine._make(t) for t in parser.parse(text.encode())]


def test_every_message_rule_is_a_message_rule_with_samples() -> None:
    assert RULES and all(rule.is_message for rule in RULES)
    assert {r.id for r in RULES} == {r.id for r in RULESET.message_rules}
    assert not any(r.is_message for r in RULESET.rules)     # the event parser never sees them
    assert len(CASES) >= 35


@pytest.mark.parametrize(("rule", "line", "expect"), CASES,
                         ids=[f"{r.id}-{i}" for i, (r, _, _) in enumerate(CASES)])
def test_sample(rule, line: str, expect: dict | None) -> None:
    ruleset = Ruleset([rule])
    found = [lines_of(MessageParser(ruleset, clock=lambda: NOW, matcher=m), line + "\n")
             for m in MATCHERS]
    slow = MessageParser(ruleset, clock=lambda: NOW).parse_line(line.encode())
    for got in [*(f[0] if f else None for f in found), slow]:
        assert _differs_message(got, expect, rule.id) is None, (line, got)


@pytest.mark.parametrize("matcher", MATCHERS)
def test_fast_path_equals_reference_path_on_a_generated_log(matcher: str) -> None:
    data = generate(300, seed=3) + (
        # other framings (ISO stamps, Exim's own log, RFC 5424) take the slow path in place
        b"2026-11-21T10:00:00.123456+01:00 mx1 postfix/qmgr[3]: ISO01: removed\n"
        b"2026-11-21 10:00:02 1VxPit-000MMd-U4 Completed\n"
        b"<22>1 2026-11-21T10:00:00Z mx1 postfix/qmgr 3 - - ISO02: removed\n"
        b"Nov 21 10:00:00 mx1 postfix/pickup[9]: ISO03: removed\n")   # wrong program
    fast = lines_of(MessageParser(RULESET, clock=lambda: NOW, matcher=matcher), data.decode())
    ref = MessageParser(RULESET, clock=lambda: NOW)
    slow = [x for x in (ref.parse_line(line) for line in data.split(b"\n") if line)
            if x is not None]
    assert fast == slow
    assert [x.fields["qid"] for x in fast[-3:]] == ["ISO01", "1VxPit-000MMd-U4", "ISO02"]


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_hostile_lines_stay_within_budget(rule) -> None:
    seeds = [s.line.split(": ", 1)[-1] for s in rule.samples if s.expect is not None][:2]
    took, line = worst_hostile(rule, seeds, 16384, budget=LINE_BUDGET)
    assert took <= LINE_BUDGET * 2, f"{rule.id}: {took * 1000:.1f} ms on {line[:80]!r}"


HELO = 'x"; from=victim@example.org to=y proto=ESMTP helo=z'   # no '<' or '>': logged
EVIL = [
    '"<a@b> to=<x@y>, status=sent"@evil.example',
    '"a@b>, size=1, nrcpt=99 (queue active)"@evil.example',
    '"x client=mx[6.6.6.6], sasl_method=PLAIN, sasl_username=victim"@evil.example',
    '"a\\"b> to=<x@y>, relay=none"@evil.example',
]


@pytest.mark.parametrize("evil", EVIL)
def test_injected_sender_and_recipient_cannot_forge_fields(evil: str) -> None:
    parser = MessageParser(RULESET, clock=lambda: NOW)
    p = "Nov 21 10:00:01 mx1 postfix"
    got = lines_of(parser, "".join(line + "\n" for line in (
        f"{p}/smtpd[1]: INJ01: client=unknown[198.51.100.9]",
        f"{p}/qmgr[3]: INJ01: from=<{evil}>, size=10, nrcpt=1 (queue active)",
        f"{p}/smtp[4]: INJ01: to=<{evil}>, relay=none, delay=1, delays=0/0/0/1, dsn=5.4.4, "
        "status=bounced (Host not found)",
        f"{p}/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.51.100.9]: 554 5.7.1 <{evil}>: "
        f"Relay access denied; from=<{evil}> to=<{evil}> proto=ESMTP helo=<{HELO}>",
    )))
    start, queued, delivery, reject = got
    assert start.fields["ip"] == "198.51.100.9" and start.fields["user"] is None
    assert (queued.fields["sender"], queued.fields["size"], queued.fields["nrcpt"]) == (
        evil, "10", "1")
    assert (delivery.fields["rcpt"], delivery.fields["status"]) == (evil, "bounced")
    assert (reject.fields["ip"], reject.fields["sender"], reject.fields["rcpt"],
            reject.fields["helo"]) == ("198.51.100.9", evil, evil, HELO)


def test_unquoted_hostile_addresses_are_skipped_and_counted() -> None:
    parser = MessageParser(RULESET, clock=lambda: NOW)
    got = parser.parse(b"Nov 21 10:00:01 mx1 postfix/qmgr[3]: INJ02: from=<a b> to=<x@y>, "
                       b"size=1, nrcpt=1 (queue active)>, size=10, nrcpt=1 (queue active)\n")
    assert got == [] and parser.stats.unmatched == 1


def test_mangled_and_binary_lines_never_crash_and_both_paths_agree() -> None:
    import random

    rng = random.Random(11)
    good = generate(60, seed=9).split(b"\n")[:-1]
    lines = []
    for line in good:
        cut = rng.randrange(len(line))
        choice = rng.randrange(5)
        if choice == 0:                       # bytes flipped to anything, NUL and invalid UTF-8
            line = line[:cut] + bytes(rng.randrange(256) for _ in range(8)) + line[cut + 8:]
        elif choice == 1:                     # cut short
            line = line[:cut]
        elif choice == 2:                     # a huge line
            line = line + b"x" * 20000
        lines.append(line)
    data = b"\n".join(lines) + b"\n"
    for matcher in MATCHERS:
        parser = MessageParser(RULESET, clock=lambda: NOW, matcher=matcher)
        fast = [MessageLine._make(t) for t in parser.parse(data)]
        assert parser.stats.too_long > 0
    ref = MessageParser(RULESET, clock=lambda: NOW)
    slow = [x for x in (ref.parse_line(line) for line in lines) if x is not None]
    assert fast == slow
