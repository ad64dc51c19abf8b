"""Rules check themselves when they load: samples through the real parse path, a time budget on
hostile lines, no constructs whose behaviour differs across Python versions; the daemon refuses
to start on a failing rule, a reload keeps the old rules, check-config reports it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc, pyenv

from logwatch.parsing.rulecheck import check_rules, forbidden_constructs
from logwatch.parsing.rules import RuleError, load_rule_file, load_ruleset

REPO = Path(__file__).resolve().parents[1]
LOGIN = ("Nov 21 10:00:00 mx dovecot: pop3-login: Login: user=<bob>, method=PLAIN, "
         "rip=192.0.2.7, lip=192.0.2.1")
RULE = r"""
rules:
  - id: site-login
    kind: login
    programs: [dovecot]
    prefilter: "Login: user=<"
    service_map: {managesieve: sieve}
    regex: '^(?P<service>pop3|imap)-login: Login: user=<(?P<user>[^<>]*)>, method=\w+, rip=(?P<ip>[0-9a-fA-F.:]+), lip=[0-9a-fA-F.:]+$'
    samples:
      - line: '{login}'
        expect: {kind: login, ip: 192.0.2.7, user: bob, service: pop3}
      - line: 'Nov 21 10:00:01 mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts): user=<bob>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1'
        expect: null
"""


def rules_dir(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text).lstrip())
    return directory


def good(**swap: str) -> str:
    text = RULE.replace("{login}", LOGIN)
    for old, new in swap.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RuleError) as err:
        load_ruleset([rules_dir(tmp_path, text)])
    return str(err.value)


def test_good_samples_load(tmp_path):
    rs = load_ruleset([rules_dir(tmp_path, good())])
    rule = rs.by_id["site-login"]
    assert len(rule.samples) == 2 and rule.samples[1].expect is None


def test_regex_that_no_longer_matches_its_sample_is_caught(tmp_path):
    message = load_error(tmp_path, good(**{r"method=\w+": r"method=[A-Z]+-X"}))
    path = tmp_path / "rules" / "site.yaml"
    assert f"{path}:9: rule 'site-login': sample '{LOGIN}'" in message
    assert "expected an event, got none (the regex does not match the message" in message
    assert f"on Python {sys.version.split()[0]}" in message


def test_sample_with_a_wrong_field_names_the_field(tmp_path):
    message = load_error(tmp_path, good(**{"user: bob": "user: alice"}))
    assert "user: expected 'alice', got 'bob'" in message


def test_ip_is_compared_normalised(tmp_path):
    load_ruleset([rules_dir(tmp_path, good(**{"ip: 192.0.2.7": "ip: '::ffff:192.0.2.7'"}))])


def test_negative_sample_that_gives_an_event_is_caught(tmp_path):
    text = good(**{"Disconnected (auth failed, 1 attempts): ": "Login: "})
    message = load_error(tmp_path, text)
    assert "expected no event, got kind='login', ip='192.0.2.7'" in message


def test_sample_of_another_program_is_explained(tmp_path):
    message = load_error(tmp_path, good(**{"programs: [dovecot]": "programs: [imapd]"}))
    assert "program 'dovecot' is not one of imapd" in message


@pytest.mark.parametrize("swap,reason", [
    ({"    samples:\n": "    samples_x:\n"}, "unknown key 'samples_x'"),
    ({"        expect: {kind: login, ip: 192.0.2.7, user: bob, service: pop3}\n": "        expect: null\n"},
     "at least one must expect an event"),
    ({"expect: {kind: login,": "expect: {colour: red, kind: login,"}, "bad: ['colour']"),
    ({"        expect: null\n": "        expected: null\n"}, "exactly the keys line and expect"),
])
def test_malformed_samples_name_file_line_and_rule(tmp_path, swap, reason):
    message = load_error(tmp_path, good(**swap))
    assert f"{tmp_path / 'rules' / 'site.yaml'}:" in message and "'site-login'" in message
    assert reason in message


def test_a_rule_without_samples_is_refused(tmp_path):
    text = good()
    text = text[:text.index("    samples:")]
    message = load_error(tmp_path, text)
    assert "samples: missing" in message


@pytest.mark.parametrize("construct,name", [
    (r"method=\w++", "possessive quantifier"),
    (r"method=(?>\w+)", "atomic group"),
])
def test_possessive_and_atomic_constructs_are_refused(tmp_path, construct, name):
    with pytest.raises(RuleError, match=name):
        load_rule_file(rules_dir(tmp_path, good(**{r"method=\w+": construct})) / "site.yaml")


def test_forbidden_constructs_sees_through_escapes():
    """The pattern is parsed, not searched as text: "\\++" is a repeated "+", not possessive."""
    assert forbidden_constructs(r"a\+++b") == ["possessive quantifier"]
    assert forbidden_constructs(r"a[+]{2}+b") == ["possessive quantifier"]
    assert forbidden_constructs(r"a\++ [*+?]+ (?:x)+ \(?>") == []


def test_no_shipped_rule_uses_version_dependent_constructs():
    rs = load_ruleset([REPO / "rules"], check=False)
    assert {r.id: forbidden_constructs(r.regex.pattern) for r in rs.rules
            if forbidden_constructs(r.regex.pattern)} == {}


def test_every_shipped_rule_passes_its_samples():
    rs = load_ruleset([REPO / "rules"], check=False)
    assert all(any(s.expect is not None for s in r.samples) for r in rs.rules)
    assert check_rules(rs.rules) == []


OLD_UW = r"""
rules:
  - id: old-uw-imap-login-failed
    kind: login-failed
    service: imap
    programs: ["imapd"]
    prefilter: "Login failed"
    regex: '^Login failed user=(?P<user>\S*)[^\n]* host=[^\s\[\]]* ?\[(?P<ip>[0-9A-Fa-f.:]+)\]\s*$'
    samples:
      - line: 'Nov 21 14:01:00 mail imapd[5110]: Login failed user=root auth=root host=scan.example.net [198.51.100.60]'
        expect: {kind: login-failed, ip: 198.51.100.60, user: root}
"""


def test_a_backtracking_regex_is_refused_with_the_line_that_shows_it(tmp_path):
    """uw-imap's old regex: quadratic on "Login failed user=" + a long word without host=."""
    message = load_error(tmp_path, OLD_UW)
    assert "rule 'old-uw-imap-login-failed': regex took" in message
    assert "it backtracks" in message
    assert re.search(r"on a \d{5}-character line starting 'Login failed user=", message)


def test_issue_repro_dovecot_events_on_this_interpreter():
    """Issue 11: `logwatchctl parse dovecot.log` gave 14 events on 3.11.2, 23 on 3.11.7."""
    out = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "parse",
                          str(REPO / "tests/fixtures/logs/dovecot.log")],
                         capture_output=True, text=True, env=pyenv(), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 23


# -- the daemon, reload and check-config -------------------------------------------------

BROKEN = good(**{r"method=\w+": r"method=[A-Z]+-X"})


def test_daemon_refuses_to_start_on_a_failing_sample(tmp_path):
    d = DaemonProc(tmp_path, {"rules": {"dirs": [str(REPO / "rules")],
                                        "local_dir": str(rules_dir(tmp_path, BROKEN))}})
    try:
        d.start(wait=False)
        assert d.proc is not None
        assert d.proc.wait(timeout=60) == 1
        text = d.stderr()
        assert "action=startup-failed error=rules: 1 rule self-test failure(s)" in text
        assert f"{tmp_path / 'rules' / 'site.yaml'}:9: rule 'site-login': sample" in text
        assert "expected an event, got none" in text
    finally:
        d.stop(signal.SIGKILL)


def test_reload_with_a_failing_sample_keeps_the_old_rules(tmp_path):
    local = rules_dir(tmp_path, good())
    d = DaemonProc(tmp_path, {"rules": {"dirs": [str(REPO / "rules")], "local_dir": str(local)}})
    try:
        d.start()
        (local / "site.yaml").write_text(textwrap.dedent(BROKEN).lstrip())
        resp = d.req(cmd="reload")
        assert resp["ok"] is False
        assert "old config kept" in resp["error"] and "rule 'site-login': sample" in resp["error"]
        assert "action=reload result=rejected" in d.stderr()
        # The old rule still parses: its login grants relay.
        d.append(LOGIN.replace("Nov 21 10:00:00", time.strftime("%b %e %H:%M:%S")))   # now: fresh
        deadline = time.monotonic() + 20
        while d.req(cmd="status")["grants"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.req(cmd="status")["grants"] == 1
    finally:
        d.stop(signal.SIGKILL)


def test_check_config_reports_a_failing_sample(tmp_path):
    local = rules_dir(tmp_path, BROKEN)
    config = tmp_path / "logwatchd.yaml"
    config.write_text(f"rules:\n  dirs: [{REPO / 'rules'}]\n  local_dir: {local}\n")
    out = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "check-config", str(config)],
                         capture_output=True, text=True, env=pyenv(), timeout=120, check=False)
    assert out.returncode == 1
    assert "rules: 1 rule self-test failure(s)" in out.stderr
    assert "rule 'site-login': sample" in out.stderr and "expected an event" in out.stderr
    good_config = tmp_path / "good.yaml"
    good_config.write_text(f"rules:\n  dirs: [{REPO / 'rules'}]\n  local_dir: {tmp_path / 'no'}\n")
    ok = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "check-config", str(good_config)],
                        capture_output=True, text=True, env=pyenv(), timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
