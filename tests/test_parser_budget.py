"""The parser's per-line limits: messages over max_message are skipped and counted; a rule whose
search blows the time budget (confirmed in CPU time) is quarantined for a while, so a block of
hostile lines costs one slow search, not one per line."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc

import logwatch.parsing.parser as parser_module
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import load_ruleset

REPO = Path(__file__).resolve().parents[1]
NOW = 1795305600.0
# Quadratic on "bad from IP " + many "~" without "!": every split between the two ~* is tried.
# The load-time probe does not find it ("~" is in no probe unit), which is what the run-time
# budget is for.
SLOW_RULE = r"""
rules:
  - id: site-slow
    kind: auth-failed
    programs: [myd]
    prefilter: "bad from "
    regex: '^bad from (?P<ip>[0-9.]+) (~*)~*!$'
    samples:
      - line: 'Nov 21 10:00:00 mx myd: bad from 192.0.2.1 ~~!'
        expect: {kind: auth-failed, ip: 192.0.2.1}
"""
HOSTILE = "Nov 21 10:00:0{} mx myd: bad from 198.51.100.{} " + "~" * 12000
GOOD = "Nov 21 10:00:09 mx myd: bad from 192.0.2.9 ~!"
LOGIN = ("Nov 21 10:00:09 mx dovecot: imap-login: Login: user=<a>, method=PLAIN, "
         "rip=192.0.2.90, lip=192.0.2.1, mpid=1, TLS, session=<s1>")


@pytest.fixture
def slow_rules(tmp_path):
    local = tmp_path / "rules.d"
    local.mkdir()
    (local / "site.yaml").write_text(textwrap.dedent(SLOW_RULE).lstrip())
    return local


def test_the_slow_rule_passes_the_load_probe(slow_rules):
    """Else the daemon test below could not load it (the probe is tested elsewhere)."""
    assert "site-slow" in load_ruleset([REPO / "rules"], local_dir=slow_rules).by_id


def test_message_over_max_message_is_skipped_and_counted():
    rs = load_ruleset([REPO / "rules"])
    parser = Parser(rs, clock=lambda: NOW, max_message=200)
    fits = LOGIN
    too_long = LOGIN.replace("user=<a>", "user=<" + "a" * 200 + ">")
    events = parser.parse(f"{fits}\n{too_long}\n".encode())
    assert [e.ip for e in events] == ["192.0.2.90"]
    assert parser.stats.too_long == 1
    assert parser.parse_line(too_long.encode()) is None and parser.stats.too_long == 2


def test_default_max_message_is_the_probe_size():
    from logwatch.parsing.rulecheck import PROBE_SIZE

    assert parser_module.MAX_MESSAGE == PROBE_SIZE


def test_rule_over_budget_is_quarantined_after_one_line(slow_rules):
    rs = load_ruleset([REPO / "rules"], local_dir=slow_rules)
    parser = Parser(rs, clock=lambda: NOW, budget=0.01, quarantine=3600)
    chunk = "\n".join([HOSTILE.format(i, i) for i in range(8)] + [GOOD, LOGIN]) + "\n"
    events = parser.parse(chunk.encode())
    # The login of another rule is still found; the quarantined rule's own lines are not.
    assert [(e.rule, e.ip) for e in events] == [("dovecot-login", "192.0.2.90")]
    assert parser.stats.over_budget == {"site-slow": 1}
    assert parser.stats.quarantined_lines == 8           # 7 hostile lines and the good one
    assert set(parser.quarantine_left()) == {"site-slow"}
    assert 3500 < parser.quarantine_left()["site-slow"] <= 3600


def test_quarantine_ends(slow_rules):
    rs = load_ruleset([REPO / "rules"], local_dir=slow_rules)
    parser = Parser(rs, clock=lambda: NOW, budget=0.01, quarantine=0.2)
    parser.parse((HOSTILE.format(0, 1) + "\n").encode())
    assert parser.parse((GOOD + "\n").encode()) == []
    time.sleep(0.3)
    assert [e.ip for e in parser.parse((GOOD + "\n").encode())] == ["192.0.2.9"]
    assert parser.quarantine_left() == {}


def test_a_descheduled_search_is_not_quarantined(monkeypatch):
    """Wall time over the budget but not CPU time (a busy machine): the rule stays in use."""
    class JumpyTime:
        calls = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            cls.calls += 1.0
            return cls.calls          # every search seems to take a whole second

        thread_time = staticmethod(time.thread_time)
        monotonic = staticmethod(time.monotonic)

    monkeypatch.setattr(parser_module, "time", JumpyTime)
    parser = Parser(load_ruleset([REPO / "rules"]), clock=lambda: NOW, budget=0.05)
    events = parser.parse((LOGIN + "\n" + LOGIN + "\n").encode())
    assert len(events) == 2 and parser.quarantine_left() == {}
    assert not parser.stats.over_budget


def test_daemon_reports_the_quarantine_and_keeps_going(tmp_path, slow_rules):
    d = DaemonProc(tmp_path, {"rules": {"dirs": [str(REPO / "rules")],
                                        "local_dir": str(slow_rules)}})
    try:
        d.start()
        stamp = time.strftime("%b %e %H:%M:%S")
        d.append(*[f"{stamp} mx myd: bad from 198.51.100.{i} " + "~" * 16000 for i in range(10)],
                 LOGIN.replace("Nov 21 10:00:09", stamp))
        deadline = time.monotonic() + 30
        while d.req(cmd="status")["grants"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = d.req(cmd="status")
        assert st["grants"] == 1
        assert st["rules_over_budget"] == {"site-slow": 1}
        assert set(st["rules_quarantined"]) == {"site-slow"}
        assert "action=rule-quarantined rule=site-slow" in d.stderr()
        assert any(e["message"].startswith("rule site-slow quarantined for 600s: one search took")
                   for e in st["errors"])
    finally:
        d.stop(signal.SIGKILL)
