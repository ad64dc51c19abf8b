"""Engine behaviour as data: each tests/scenarios/*.yaml is one README promise, run through
the real config parser, the real rules (Parser.parse_line) and the Engine on a fake clock.

A scenario (see tests/scenarios/README for the whole format):

    promise: what the admin is told, in one sentence
    readme: a phrase of README that makes the promise (checked: it must be there)
    config: |             # logwatchd.yaml fragment, through parse_config
      relay: {grace: 30m}
    whitelist: [203.0.113.0/24]      # optional whitelist file lines
    steps:
      - at: 40s           # clock time since the start; steps go forward
        line: "mx1 postfix/smtpd[1]: ..."   # the line, after its timestamp
        logged: -10m      # optional: the line's own time, relative to the step
        repeat: 5         # optional: 5 lines, `every` apart ({n} in the line: 1..5)
        every: 10s
        expect: [grant 192.0.2.7 until 30m]  # every effect of the step, in order

Each step first sweeps (expiries up to its time) and then handles its lines. Effects are
written "grant IP until T", "refresh IP until T", "revoke IP REASON", "ban NET for D"
("ban NET forever"), "lift NET REASON"; T and `at` are durations since the start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FakeClock

from logwatch.daemon.config import parse_config
from logwatch.engine.core import Engine
from logwatch.engine.model import BanAdded, BanLifted, Effect, GrantAdded, GrantRevoked
from logwatch.engine.whitelist import Whitelist
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import Ruleset, default_rules_dirs, load_ruleset
from logwatch.util.duration import parse_duration

HERE = Path(__file__).resolve().parent
SCENARIOS = sorted((HERE / "scenarios").glob("*.yaml"))
README = HERE.parent / "README"
START = 1_795_341_600.0             # 2026-11-22 10:00:00 UTC
STEP_KEYS = {"at", "line", "logged", "repeat", "every", "expect"}


def offset(text: Any) -> float:
    """A signed duration: "30m", "-10m", "+4m", 90."""
    s = str(text).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    return sign * parse_duration(s.lstrip("+-"), allow_zero=True)


@dataclass
class Step:
    at: float
    line: str | None = None
    logged: float = 0.0
    repeat: int = 1
    every: float = 0.0
    expect: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    name: str
    promise: str
    readme: str
    config: str
    whitelist: list[str]
    steps: list[Step]


def load(path: Path) -> Scenario:
    """One scenario file; a malformed one fails its test naming the file and the key."""
    doc = yaml.safe_load(path.read_text())
    unknown = set(doc) - {"promise", "readme", "config", "whitelist", "steps"}
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    steps = []
    for i, raw in enumerate(doc["steps"]):
        bad = set(raw) - STEP_KEYS
        assert not bad and "at" in raw, f"{path.name}: step {i}: keys {sorted(raw)}"
        steps.append(Step(at=offset(raw["at"]), line=raw.get("line"),
                          logged=offset(raw.get("logged", 0)), repeat=int(raw.get("repeat", 1)),
                          every=offset(raw.get("every", 0)), expect=list(raw.get("expect") or [])))
    return Scenario(path.stem, doc["promise"], doc["readme"], doc.get("config") or "",
                    list(doc.get("whitelist") or []), steps)


def describe(effect: Effect) -> str:
    """An effect in the scenario notation, times relative to START."""
    def rel(t: float) -> str:
        return f"{t - START:g}s"
    if isinstance(effect, GrantAdded):
        verb = "refresh" if effect.refreshed else "grant"
        return f"{verb} {effect.grant.ip} until {rel(effect.grant.expires_at)}"
    if isinstance(effect, GrantRevoked):
        return f"revoke {effect.ip} {effect.why}"
    if isinstance(effect, BanAdded):
        ban = effect.ban
        if ban.expires_at is None:
            return f"ban {ban.net} forever"
        return f"ban {ban.net} for {ban.expires_at - ban.since:g}s"
    if isinstance(effect, BanLifted):
        return f"lift {effect.net} {effect.why}"
    raise AssertionError(f"unknown effect {effect!r}")


def normalise(expect: str) -> str:
    """An expected effect with its durations in seconds, as describe() writes them."""
    words = expect.split()
    if len(words) == 4 and words[2] in ("until", "for"):
        words[3] = f"{offset(words[3]):g}s"
    return " ".join(words)


def stamp(when: float) -> str:
    """RFC 3339 timestamp (rsyslog's high-precision format), as a log line's first field."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds")


@pytest.fixture(scope="module")
def ruleset() -> Ruleset:
    return load_ruleset(default_rules_dirs())


def run_step(engine: Engine, parser: Parser, clock: FakeClock, step: Step, where: str) -> list[str]:
    """The effects of one step: the sweep at its time, then each of its lines."""
    clock.now = START + step.at
    effects = list(engine.sweep())
    for n in range(1, step.repeat + 1):
        if n > 1:
            clock.advance(step.every)
            effects += engine.sweep()
        if step.line is None:
            continue
        line = f"{stamp(clock.now + step.logged)} {step.line.replace('{n}', str(n))}"
        event = parser.parse_line(line.encode())
        assert event is not None, f"{where}: no rule matches {line!r}"
        effects += engine.handle(event)
    return [describe(e) for e in effects]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, ruleset: Ruleset) -> None:
    sc = load(path)
    readme = " ".join(README.read_text().split())
    assert " ".join(sc.readme.split()) in readme, f"{path.name}: README no longer says {sc.readme!r}"
    cfg = parse_config(sc.config, str(path))
    whitelist, problems = Whitelist.from_lines(sc.whitelist, f"{path.name}:whitelist")
    assert not problems, problems
    clock = FakeClock(START)
    engine = Engine(cfg.relay, cfg.bans, whitelist=whitelist,
                    mynetworks=cfg.relay.mynetworks or (), clock=clock)
    parser = Parser(ruleset, clock=clock, matcher="re")
    for i, step in enumerate(sc.steps):
        where = f"{path.name} step {i} (at {step.at:g}s)"
        got = run_step(engine, parser, clock, step, where)
        assert got == [normalise(e) for e in step.expect], f"{where}: {sc.promise}"


def test_there_are_scenarios_for_each_promise() -> None:
    names = {p.stem for p in SCENARIOS}
    assert len(names) >= 12
    for prefix in ("relay-", "ban-", "logtime-", "ipv6-"):
        assert any(n.startswith(prefix) for n in names), prefix


def test_runner_notices_a_wrong_expectation(ruleset: Ruleset) -> None:
    """The runner compares what it must: a grant one second off is a failure."""
    clock = FakeClock(START)
    engine = Engine(parse_config("").relay, parse_config("").bans, clock=clock)
    parser = Parser(ruleset, clock=clock, matcher="re")
    step = Step(at=0, line="mail dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
                           "rip=192.0.2.11, lip=192.0.2.1")
    got = run_step(engine, parser, clock, step, "inline")
    assert got == ["grant 192.0.2.11 until 1800s"]
    assert got != [normalise("grant 192.0.2.11 until 1801s")]
    assert re.fullmatch(r"ban \S+ for \d+s", normalise("ban 192.0.2.7/32 for 1h"))
