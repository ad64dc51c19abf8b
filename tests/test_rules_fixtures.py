"""Every shipped rule against hand-written log lines in tests/fixtures/logs/*.log.

Each log line is preceded by `# expect: {...}` (kind, ip and optionally user, service, rule) or
`# expect: none`. Both the fast chunk path and the slow reference path must agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from matchers import MATCHERS

from logwatch.parsing.framing import Framer
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import Ruleset, load_ruleset

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests/fixtures/logs"
# 2026-11-22 00:00 UTC: the fixtures' year-less "Nov 21" dates lie in the past.
NOW = 1795305600.0
EXPECT = "# expect: "


@dataclass
class Case:
    file: str
    line_no: int
    text: str
    expect: dict | None


def read_cases(path: Path) -> list[Case]:
    """The (expectation, line) pairs of one fixture file; a line without expectation is an error."""
    cases: list[Case] = []
    pending: dict | None | str = "missing"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith(EXPECT):
            body = line[len(EXPECT):].strip()
            pending = None if body == "none" else json.loads(body)
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if pending == "missing":
            raise AssertionError(f"{path.name}:{number}: log line without '# expect:' comment")
        cases.append(Case(path.name, number, line, pending))  # type: ignore[arg-type]
        pending = "missing"
    return cases


def exim_mainlog_framed() -> bool:
    frame = Framer(lambda: NOW).frame("2026-11-21 19:10:03 SMTP call from [192.0.2.1] dropped: x")
    return frame is not None and frame.program.startswith("exim")


@pytest.fixture(scope="module")
def ruleset() -> Ruleset:
    return load_ruleset([REPO / "rules"])


FILES = sorted(p.name for p in FIXTURES.glob("*.log"))


@pytest.mark.parametrize("name", FILES)
def test_fixture_file(name: str, ruleset: Ruleset) -> None:
    cases = read_cases(FIXTURES / name)
    if name == "exim-mainlog.log" and not exim_mainlog_framed():
        # Until the framing knows exim's mainlog, check the exim rules on the message text.
        for case in cases:
            message = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", case.text)
            hit = next((r for r in ruleset.for_program("exim") if r.regex.search(message)), None)
            want = case.expect.get("rule") if case.expect else None
            assert (hit.id if hit else None) == want, f"{name}:{case.line_no}: {hit} != {want}"
        pytest.xfail("logwatch/parsing/framing.py does not frame exim's own mainlog format yet")
    assert cases, f"{name} holds no cases"
    errors = []
    for case in cases:
        fasts = [Parser(ruleset, clock=lambda: NOW, matcher=m).parse(case.text.encode() + b"\n")
                 for m in MATCHERS]
        fast = fasts[0]
        slow = Parser(ruleset, clock=lambda: NOW).parse_line(case.text.encode(), 1)
        where = f"{case.file}:{case.line_no}"
        if any(other != fast for other in fasts) or len(fast) > 1 or (fast[0] if fast else None) != slow:
            errors.append(f"{where}: fast path {fast} != slow path {slow}")
            continue
        event = slow
        if case.expect is None:
            if event is not None:
                errors.append(f"{where}: expected no event, got {event.kind} {event.ip} ({event.rule})")
            continue
        if event is None:
            errors.append(f"{where}: expected {case.expect}, got no event")
            continue
        got = {"kind": event.kind, "ip": event.ip, "user": event.user,
               "service": event.service, "rule": event.rule}
        wrong = {k: (v, got[k]) for k, v in case.expect.items() if got.get(k) != v}
        if wrong:
            errors.append(f"{where}: (expected, got) {wrong}")
    assert not errors, "\n".join(errors)


def test_every_rule_has_a_fixture(ruleset: Ruleset) -> None:
    """Each shipped rule id is exercised by at least one fixture line that expects it."""
    expected = {c.expect.get("rule") for n in FILES for c in read_cases(FIXTURES / n) if c.expect}
    missing = sorted(r.id for r in ruleset.rules if r.id not in expected)
    assert not missing, f"rules without a fixture line: {missing}"


def test_every_fixture_names_a_real_rule(ruleset: Ruleset) -> None:
    named = {c.expect.get("rule") for n in FILES for c in read_cases(FIXTURES / n) if c.expect}
    unknown = sorted(r for r in named if r is not None and r not in ruleset.by_id)
    assert not unknown, f"fixtures name rules that do not exist: {unknown}"


def test_expectations_are_complete() -> None:
    """Every positive expectation names at least the kind and the IP."""
    for name in FILES:
        for case in read_cases(FIXTURES / name):
            if case.expect is not None:
                assert {"kind", "ip"} <= set(case.expect), f"{name}:{case.line_no}"
