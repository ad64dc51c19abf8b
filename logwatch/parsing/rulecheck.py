"""Rules that check themselves: run every rule's samples through the real parse path, and time
its regex on long hostile lines made of its own literals, when the rules are loaded."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logwatch.parsing.events import MESSAGE_FIELDS, Event, normalize_ip

# Samples use year-less syslog dates: a fixed "now" late in a year places them all the same way.
SAMPLE_NOW = 1795305600.0          # 2026-11-22 00:00 UTC
# A sample line, or a hostile probe line, may cost a rule at most this (CPU seconds of this
# thread, so a busy machine does not fail a rule; best of 3 runs): linear rules take ~1.5 ms on a
# 16 KB probe, a quadratic one ~150 ms (uw-imap's old regex).
LINE_BUDGET = 0.025
# Hostile probe lines are this long: the longest message the parser hands to a rule.
PROBE_SIZE = 16384
PROBE_FINALISTS = 6
EVENT_FIELDS = ("time", "kind", "ip", "user", "service", "program", "rule", "host", "line")
# What a message rule's sample may expect: the message line's own fields and its groups.
MESSAGE_SAMPLE_FIELDS = ("kind", "host", "program", *MESSAGE_FIELDS)
# Tokens common in mail-log syntax, mixed with each rule's own literals in the probes.
GENERIC_UNITS = ("a", " ", "<", ",", ":", "[", "(", "=", "1.2.3.4", "[1.2.3.4] ", "<a>, ",
                 ", rip=1.2.3.4", "a@b ")
# The few units that fill what most quantifiers take (\S, \w, \s, [^\n], addresses), tried
# after every field boundary of a seed.
CORE_UNITS = ("a", " ", "a ", "1.", "<a>,")
_SEPARATORS = re.compile(r"(?<=[ ,;:=<>\[\]()])")


@dataclass(frozen=True)
class Sample:
    """One sample line of a rule and what it must give (None: no event from this rule)."""

    line: str
    expect: dict[str, Any] | None
    where: str = ""                 # "file:line" of the sample


def forbidden_constructs(pattern: str) -> list[str]:
    """Possessive quantifiers and atomic groups in a pattern: their behaviour differs between
    Python 3.11 releases (3.11.2 vs 3.11.7), so a rule may not use them."""
    try:
        from re import _constants, _parser  # 3.11+; private, so fail open to the text check
    except ImportError:                          # pragma: no cover
        return [c for c in ("*+", "++", "?+", "}+", "(?>") if c in pattern]
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, _parser.SubPattern):
            node = node.data
        if isinstance(node, (list, tuple)):
            for item in node:
                if isinstance(item, tuple) and len(item) == 2 and item[0] in (
                        _constants.POSSESSIVE_REPEAT, _constants.ATOMIC_GROUP):
                    name = ("possessive quantifier" if item[0] == _constants.POSSESSIVE_REPEAT
                            else "atomic group (?>...)")
                    if name not in found:
                        found.append(name)
                walk(item)

    walk(_parser.parse(pattern))
    return found


def _best_time(run: Callable[[], object], budget: float) -> float:
    """Seconds one call takes; re-measured (best of 3) only when over budget, so a busy CPU
    does not fail a linear rule."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
        if best <= budget:
            break
    return best


def _differs(event: Event | None, expect: dict[str, Any] | None, rule_id: str) -> str | None:
    """What differs between an event and a sample's expectation, or None."""
    if expect is None:
        return None if event is None else f"expected no event, got {_show(event)}"
    if event is None:
        return "expected an event, got none"   # _why_none() says more
    if event.rule != rule_id:
        return f"the event came from rule {event.rule!r}"
    wrong = []
    for key, want in expect.items():
        got = getattr(event, key)
        if key == "time":
            ok = got.isoformat().startswith(str(want))
        elif key == "ip":
            ok = got == (normalize_ip(str(want)) or str(want))
        elif want is None or got is None:
            ok = want is got
        else:
            ok = str(got) == str(want)
        if not ok:
            wrong.append(f"{key}: expected {want!r}, got {got!r}")
    return "; ".join(wrong) or None


def _differs_message(found: Any, expect: dict[str, Any] | None, rule_id: str) -> str | None:
    """What differs between a message line (messageparse.MessageLine) and a sample's
    expectation, or None; a field expected null must be absent from the line."""
    if expect is None:
        return None if found is None else f"expected no message line, got {found.fields!r}"
    if found is None:
        return "expected a message line, got none"
    if found.rule != rule_id:
        return f"the message line came from rule {found.rule!r}"
    got_all = {**found.fields, "kind": found.kind, "host": found.host, "program": found.program}
    wrong = []
    for key, want in expect.items():
        got = got_all.get(key)
        if key == "ip" and want is not None:
            want = normalize_ip(str(want)) or str(want)
        if (want is None) != (got is None) or (want is not None and str(got) != str(want)):
            wrong.append(f"{key}: expected {want!r}, got {got!r}")
    return "; ".join(wrong) or None


def _why_none(rule: Any, line: str) -> str:
    from logwatch.parsing.framing import Framer

    frame = Framer(lambda: SAMPLE_NOW).frame(line)
    if frame is None:
        return " (its syslog framing is not understood)"
    if not rule.applies_to(frame.program):
        return f" (program {frame.program!r} is not one of {', '.join(rule.programs)})"
    return f" (the regex does not match the message {frame.message!r})"


def _show(event: Event) -> str:
    return ", ".join(f"{k}={getattr(event, k)!r}" for k in ("kind", "ip", "user", "service"))


def hostile_specs(rule: Any, seeds: Iterable[str], units_max: int = 12, cuts_max: int = 6,
                  tails: bool = True) -> list[tuple[str, str, str]]:
    """(head, unit, tail) of hostile lines aimed at the rule's regex: head + unit * n + tail.
    Heads are the rule's literals and each seed message cut at field boundaries; units are
    the literal words of the pattern, the seed's own fields and the usual syntax tokens. A head
    without its tail is what makes overlapping quantifiers backtrack: "Login failed user=" +
    100 KB of one word. `tails`: also with the seed's rest after the filler, and the whole seed
    repeated (the full sweep of the tests)."""
    words = re.findall(r"[A-Za-z][A-Za-z _=-]{2,}", rule.regex.pattern)
    units = list(dict.fromkeys(w for word in words for w in (word, word + " ", word + "=<a>, ")))
    units = units[:units_max] + list(GENERIC_UNITS)
    out = [(literal.decode(), unit, "") for literal in rule.prefilters for unit in units]
    for seed in seeds:
        pieces = [p for p in _SEPARATORS.split(seed) if len(p) > 1]
        seed_units = units + list(dict.fromkeys(pieces))[:units_max]
        bounds = [m.start() for m in _SEPARATORS.finditer(seed)] or [len(seed) // 2]
        step = max(1, len(bounds) // cuts_max)
        chosen = set(bounds[::step][:cuts_max])
        for cut in bounds[::max(1, len(bounds) // 24)]:
            for unit in seed_units if cut in chosen else CORE_UNITS:
                out.append((seed[:cut], unit, ""))
                if tails:
                    out.append((seed[:cut], unit, seed[cut:]))
        if tails:
            out.append(("", seed + " ", ""))
    return out


def build(spec: tuple[str, str, str], size: int) -> str:
    """The hostile line of a spec, about `size` characters long."""
    head, unit, tail = spec
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


def hostile_lines(rule: Any, seeds: Iterable[str], size: int, **kwargs: Any) -> list[str]:
    """Hostile messages of about `size` characters (hostile_specs)."""
    return [build(spec, size) for spec in hostile_specs(rule, seeds, **kwargs)]


def worst_hostile(rule: Any, seeds: list[str], size: int, finalists: int = 6,
                  budget: float = 0.0, **spec_kwargs: Any) -> tuple[float, str]:
    """The slowest hostile line of `size` characters for the rule's regex and its CPU time
    (best of 3 when over `budget`). Two stages keep this cheap: every hostile line at size/16,
    then the slowest few at full size (a super-linear case is the slowest at any size)."""
    search, clock = rule.regex.search, time.thread_time
    small = []
    for spec in hostile_specs(rule, seeds, **spec_kwargs):
        line = build(spec, size // 16)
        started = clock()
        search(line)
        small.append((clock() - started, spec))
    small.sort(key=lambda pair: pair[0], reverse=True)
    worst, worst_line = 0.0, ""
    for _took, spec in small[:finalists]:
        line = build(spec, size)
        took = _best_time(lambda s=line: search(s), budget)
        if took >= worst:
            worst, worst_line = took, line
    return worst, worst_line


def _probe(rule: Any, seeds: list[str], size: int, budget: float) -> str | None:
    """A problem if the regex blows the budget on a hostile line of `size` characters."""
    took, line = worst_hostile(rule, seeds, size, PROBE_FINALISTS, budget,
                               units_max=6, cuts_max=3, tails=False)
    if took <= budget:
        return None
    return (f"{rule.source}: rule {rule.id!r}: regex took {took * 1000:.0f} ms on a "
            f"{len(line)}-character line starting {line[:60]!r} (budget "
            f"{budget * 1000:.0f} ms): it backtracks; see README, 'Log rules'")


def sample_message(rule: Any, sample: Sample) -> str | None:
    """The message part (after framing) of a sample line, for seeding the hostile probes."""
    from logwatch.parsing.framing import Framer

    frame = Framer(lambda: SAMPLE_NOW).frame(sample.line)
    return None if frame is None else frame.message


def check_rule(rule: Any, probe_size: int = PROBE_SIZE, budget: float = LINE_BUDGET,
               probes: bool = True) -> list[str]:
    """Problems of one rule: a sample that gives the wrong result, a line over the budget
    (`probes`: also time the samples and the hostile probes, as the daemon and check-config do)."""
    from logwatch.parsing.parser import Parser
    from logwatch.parsing.rules import Ruleset

    problems: list[str] = []
    parser: Any = Parser(Ruleset([rule]), clock=lambda: SAMPLE_NOW, matcher="re")
    differs: Callable[[Any, Any, str], str | None] = _differs
    if rule.is_message:
        from logwatch.parsing.messageparse import MessageParser

        parser = MessageParser(Ruleset([rule]), clock=lambda: SAMPLE_NOW, matcher="re")
        differs = _differs_message
    seeds = []
    for sample in rule.samples:
        event = parser.parse_line(sample.line.encode())
        why = differs(event, sample.expect, rule.id)
        if why and event is None:
            why += _why_none(rule, sample.line)
        if why:
            problems.append(f"{sample.where}: rule {rule.id!r}: sample {sample.line!r}: {why}")
        if not probes:
            continue
        took = _best_time(lambda s=sample: parser.parse_line(s.line.encode()), budget)
        if took > budget:
            problems.append(f"{sample.where}: rule {rule.id!r}: sample {sample.line!r} took "
                            f"{took * 1000:.1f} ms (budget {budget * 1000:.0f} ms)")
        if sample.expect is not None:
            message = sample_message(rule, sample)
            if message:
                seeds.append(message)
    # The load-time probe is the cheap part of the tests' sweep (tests/test_rules_backtracking.py):
    # prefixes of one sample without their tail, which is where overlapping quantifiers backtrack.
    slow = _probe(rule, seeds[:1], probe_size, budget) if probes else None
    if slow:
        problems.append(slow)
    return problems


# Results by (pattern, programs, samples): a process that loads the same rules again (reload,
# tests) does not pay for the probes twice.
_checked: dict[tuple, list[str]] = {}


def check_rules(rules: Iterable[Any], probes: bool = True) -> list[str]:
    """Problems of every rule (empty: all samples pass, all probes within the budget)."""
    problems: list[str] = []
    for rule in rules:
        key = (rule.id, rule.source, rule.kind, rule.service, rule.regex.pattern, rule.programs,
               tuple(sorted(rule.service_map.items())),
               tuple((s.line, repr(s.expect)) for s in rule.samples), probes)
        found = _checked.get(key)
        if found is None:
            found = _checked[key] = check_rule(rule, probes=probes)
        problems += found
    return problems
