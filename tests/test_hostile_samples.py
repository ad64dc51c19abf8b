"""Every rule's `samples:` (real lines and attack shapes) give exactly the expected event.

A sample is a full syslog line with `expect:` a subset of Event fields (the event must come from
that rule) or null (that rule must give no event). Each line goes through the fast chunk path
with every matcher and the slow reference path, with the rule alone, so a sample tests its own
rule even where an earlier rule would match first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from matchers import MATCHERS

from logwatch.parsing.events import Event
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import Rule, Ruleset, load_rule_file

REPO = Path(__file__).resolve().parents[1]
NOW = 1795305600.0            # 2026-11-22 00:00 UTC: "Nov 21" lies in the past


def _cases() -> list[tuple[Rule, str, dict | None]]:
    cases = []
    for path in sorted((REPO / "rules").glob("*.yaml")):
        raw_rules = {r["id"]: r for r in yaml.safe_load(path.read_text())["rules"]}
        # Message rules (accounting) give no events: tests/test_message_rules.py has theirs.
        for rule in (r for r in load_rule_file(path) if not r.is_message):
            for sample in raw_rules[rule.id].get("samples") or ():
                cases.append((rule, sample["line"], sample["expect"]))
    return cases


CASES = _cases()


def _events(rule: Rule, line: str) -> list[Event]:
    ruleset = Ruleset([rule])
    parsers = [Parser(ruleset, clock=lambda: NOW, matcher=m) for m in MATCHERS]
    events = [e for p in parsers for e in p.parse((line + "\n").encode())]
    slow = parsers[0].parse_line(line.encode())
    return events + ([slow] if slow is not None else [])


def test_samples_exist() -> None:
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize(("rule", "line", "expect"), CASES,
                         ids=[f"{r.id}-{i}" for i, (r, _, _) in enumerate(CASES)])
def test_sample(rule: Rule, line: str, expect: dict | None) -> None:
    events = _events(rule, line)
    if expect is None:
        assert events == [], f"{rule.id} gave {[(e.kind, e.ip, e.user) for e in events]}"
        return
    assert len(events) == len(MATCHERS) + 1, f"{rule.id} gave no event for {line!r}"
    for event in events:
        got = {"kind": event.kind, "ip": event.ip, "user": event.user, "service": event.service}
        wrong = {k: (v, got.get(k)) for k, v in expect.items() if got.get(k) != v}
        assert not wrong, f"{rule.id}: (expected, got) {wrong}"
