"""No rule may backtrack catastrophically: 100 KB hostile lines must be rejected (or matched) fast.

For every rule, hostile messages are built from the rule's own fixture lines and prefilter, with
100 KB of repeated tokens the regex is made of ("[", "<", ",", ":", digits and dots, and the
literal words of the pattern) spliced in where attacker text goes. The bound is loose (seconds):
it only catches super-linear behaviour, which on 100 KB takes minutes.

A second sweep (logwatch.parsing.rulecheck.hostile_specs, the generator of the load-time probe at full
width) cuts each rule's samples and fixture messages at every field boundary and fills 100 KB
from there with the pattern's literal words, the sample's own fields and syntax tokens, with
and without the rest of the line: "Login failed user=" + 100 KB of one word is what made
uw-imap-login-failed take seconds. bench/rules_bench.py prints the worst rule's figure.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from logwatch.parsing.framing import Framer
from logwatch.parsing.rulecheck import sample_message, worst_hostile
from logwatch.parsing.rules import Rule, load_ruleset

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests/fixtures/logs"
NOW = 1795305600.0
SIZE = 100_000
BOUND = 1.0           # seconds for all hostile lines of one rule; linear rules need ~0.05

GENERIC_UNITS = ["[", "a", "<", ",", " ", ":", "1.2.3.4", "(", "=", '"', "a@b ", "[1.2.3.4] ",
                 "<a>, ", "a: ", "(a) ", ", rip=1.2.3.4", ")", ">", "@1.2.3.4:", " - 1.2.3.4"]
RULESET = load_ruleset([REPO / "rules"])


def _fixture_messages() -> dict[str, list[str]]:
    """Messages (framed) of the fixture lines, by the rule id their expectation names."""
    framer = Framer(lambda: NOW)
    out: dict[str, list[str]] = {}
    expect_rule: str | None = None
    for path in sorted(FIXTURES.glob("*.log")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# expect: "):
                m = re.search(r'"rule": "([^"]+)"', line)
                expect_rule = m.group(1) if m else None
                continue
            if line.startswith("#") or not line.strip():
                continue
            frame = framer.frame(line)
            if expect_rule and frame is not None:
                out.setdefault(expect_rule, []).append(frame.message)
            expect_rule = None
    return out


MESSAGES = _fixture_messages()


def _literal_units(rule: Rule) -> list[str]:
    """Literal words of the pattern (what a match is built from), repeated as units."""
    words = re.findall(r"[A-Za-z][A-Za-z _=-]{2,}", rule.regex.pattern)
    units = []
    for word in dict.fromkeys(words):
        units += [word, word + " ", word + ": ", word + "=<a>, "]
    return units[:16]


def hostile_messages(rule: Rule) -> list[str]:
    """~100 KB messages aimed at this rule's regex."""
    seeds = MESSAGES.get(rule.id, [])[:1] or [""]
    prefilter = rule.prefilters[0].decode()
    units = GENERIC_UNITS + _literal_units(rule)
    out = []
    for seed in seeds:
        cut = len(seed) // 2
        # The seed's own fields ("rip=1.2.3.4, ", "from=<a@b>,", "[1.2.3.4] "...) as units too.
        pieces = [p for p in re.split(r"(?<=[ ,;:>\]])", seed) if len(p) > 1]
        for unit in units + list(dict.fromkeys(pieces))[:24]:
            filler = unit * (SIZE // len(unit))
            out.append(prefilter + filler)
            out.append(seed[:cut] + filler + seed[cut:])
        # The seed itself repeated: every structure of a real match, over and over.
        if seed:
            out.append((seed + " ") * (SIZE // (len(seed) + 1)))
    return out


@pytest.mark.parametrize("rule", RULESET.rules, ids=[r.id for r in RULESET.rules])
def test_rule_is_linear_on_hostile_input(rule: Rule) -> None:
    messages = hostile_messages(rule)
    assert messages
    worst, worst_msg = 0.0, ""
    started = time.perf_counter()
    for message in messages:
        t0 = time.perf_counter()
        rule.regex.search(message)
        took = time.perf_counter() - t0
        if took > worst:
            worst, worst_msg = took, message[:80]
    total = time.perf_counter() - started
    assert total < BOUND * 5, f"{rule.id}: {total:.2f}s for {len(messages)} hostile lines"
    assert worst < BOUND, f"{rule.id}: {worst:.2f}s on one hostile line starting {worst_msg!r}"


def seeds_of(rule: Rule) -> list[str]:
    """The messages of a rule's positive samples and fixture lines."""
    samples = [sample_message(rule, s) for s in rule.samples if s.expect is not None]
    return list(dict.fromkeys([m for m in samples if m] + MESSAGES.get(rule.id, [])))[:3]


@pytest.mark.parametrize("rule", RULESET.rules, ids=[r.id for r in RULESET.rules])
def test_rule_is_linear_on_lines_of_its_own_literals(rule: Rule) -> None:
    took, line = worst_hostile(rule, seeds_of(rule), SIZE, finalists=8, budget=BOUND / 10)
    assert took < BOUND, f"{rule.id}: {took:.2f}s CPU on a 100 KB line starting {line[:80]!r}"


def test_old_uw_imap_regex_is_caught_by_the_sweep() -> None:
    """The sweep finds what issue 12.5 reported (2.4 s on 65 KB), so it can fail."""
    # 32 KB and two finalists: the quadratic line takes ~0.3 s there (~0.08 s at 16 KB on a
    # slow machine, too close to the bound), and a loaded machine can rank it second when
    # the first stage times 2 KB lines.
    rule = RULESET.by_id["uw-imap-login-failed"]
    old = Rule(**{**rule.__dict__, "regex": re.compile(
        r"^(?:Login failed|Login excessive login failures|Login disabled|Failed \w+ override of)"
        r" user=(?P<user>\S*)[^\n]* host=[^\s\[\]]* ?\[(?P<ip>[0-9A-Fa-f.:]+)\]\s*$")})
    took, line = worst_hostile(old, seeds_of(rule), 32768, finalists=2, budget=0.1)
    assert took > 0.1, (took, line[:80])


def test_every_rule_has_a_seed_message() -> None:
    """The hostile lines start from a real message of each rule (else they test too little)."""
    missing = [r.id for r in RULESET.rules if r.id not in MESSAGES]
    assert not missing, f"rules without fixture messages: {missing}"


def test_full_parser_on_hostile_chunk() -> None:
    """The whole parser on one chunk of hostile lines for every program, bounded loosely."""
    from logwatch.parsing.parser import Parser

    lines = []
    for rule in RULESET.rules:
        program = rule.programs[0].replace("*", "x")
        for message in hostile_messages(rule)[::9]:
            lines.append(f"Nov 21 10:00:00 mx {program}[1]: {message}")
    chunk = "\n".join(lines).encode() + b"\n"
    t0 = time.perf_counter()
    Parser(RULESET, clock=lambda: NOW).parse(chunk)
    took = time.perf_counter() - t0
    assert took < 30.0, f"{len(chunk) // 1_000_000} MB of hostile lines took {took:.1f}s"
