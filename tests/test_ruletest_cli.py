"""`logwatchctl parse` / `test-rules` as an admin runs them (real processes)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from matchers import MATCHERS

LOG = b"""\
Nov 21 10:00:00 mx postfix/smtpd[10]: connect from unknown[192.0.2.50]
Nov 21 10:00:01 mx postfix/smtpd[10]: NOQUEUE: reject: RCPT from unknown[192.0.2.50]: 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table; from=<a@example.com> to=<nobody@example.org> proto=ESMTP helo=<x>
Nov 21 10:00:02 mx dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, mpid=4242, TLS, session=<AbCdEf012345+/xy>
this line has no syslog framing at all
Nov 21 10:00:03 mx exotic-daemon[5]: authentication failed for bob from 203.0.113.9
"""


def ctl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("logwatchctl", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "logwatch.cli.ruletest"]
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=60, check=False)


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "mail.log"
    path.write_bytes(LOG)
    return path


def test_parse_json_is_the_stable_shape(log):
    out = ctl("parse", "--json", str(log))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["kind"], e["ip"], e["line"]) for e in events] == [
        ("user-unknown", "192.0.2.50", 2), ("login", "2001:db8::7", 3)]
    for e in events:
        assert set(e) == {"time", "kind", "ip", "user", "service", "program", "rule", "host", "line"}
    assert events[1]["user"] == "alice" and events[1]["service"] == "imap"
    assert events[1]["program"] == "dovecot" and events[1]["host"] == "mx"
    assert events[0]["time"].startswith(events[0]["time"][:4] + "-11-21T10:00:01")


def test_parse_reads_stdin_and_prints_text(log):
    out = ctl("parse", "-", stdin=LOG)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 2 and " login 2001:db8::7 " in lines[1] and "user=alice" in lines[1]


def test_parse_missing_file_is_a_clear_error(tmp_path):
    out = ctl("parse", str(tmp_path / "absent.log"))
    assert out.returncode == 2
    assert b"absent.log" in out.stderr and b"No such file" in out.stderr


def test_parse_broken_rules_dir_names_file_and_line(tmp_path, log):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "x.yaml").write_text("rules:\n  - id: broken\n    kind: nope\n")
    out = ctl("parse", "--rules", str(rules), str(log))
    assert out.returncode == 2
    assert f"{rules / 'x.yaml'}:3: rule 'broken': kind 'nope'".encode() in out.stderr


def test_test_rules_report(log):
    out = ctl("test-rules", str(log))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "Lines read:   5" in text
    assert "Events:       2" in text
    assert "user-unknown" in text and "login" in text
    assert "Lines not understood (unknown syslog framing): 1" in text
    assert "4: this line has no syslog framing at all" in text
    # A failure-looking line no rule understands is shown so the admin can add a rule.
    assert "Unmatched lines that look like failures: 1" in text
    assert "exotic-daemon[5]: authentication failed for bob" in text


def test_test_rules_line_numbers_ignore_carriage_returns(tmp_path):
    path = tmp_path / "cr.log"
    path.write_bytes(b"Nov 21 10:00:00 mx postfix/smtpd[10]: x\rjunk\n" + LOG)
    text = ctl("test-rules", str(path)).stdout.decode()
    assert "5: this line has no syslog framing at all" in text


@pytest.mark.parametrize("matcher", MATCHERS)
def test_test_rules_names_the_matcher_and_finds_the_same(log, matcher):
    out = ctl("test-rules", "--matcher", matcher, str(log))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert f"{matcher} matcher" in text and "Events:       2" in text
    parsed = ctl("parse", "--json", "--matcher", matcher, str(log))
    assert parsed.stdout == ctl("parse", "--json", "--matcher", "re", str(log)).stdout


def test_asking_for_a_missing_matcher_is_a_clear_error(log):
    out = ctl("test-rules", "--matcher", "pcre", str(log))
    assert out.returncode == 2 and b"invalid choice" in out.stderr


def test_test_rules_reports_lines_too_long(tmp_path):
    path = tmp_path / "long.log"
    path.write_bytes(LOG + b"Nov 21 10:00:09 mx postfix/smtpd[9]: NOQUEUE: reject: " + b"x" * 20000 + b"\n")
    text = ctl("test-rules", str(path)).stdout.decode()
    assert "Too long:     1 lines over 16384 characters skipped" in text


def test_test_rules_reports_a_quarantined_rule(tmp_path):
    from test_parser_budget import SLOW_RULE

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "slow.yaml").write_text(SLOW_RULE.lstrip())
    path = tmp_path / "slow.log"
    path.write_text("".join(f"Nov 21 10:00:0{i} mx myd: bad from 198.51.100.{i} " + "~" * 16000 + "\n"
                            for i in range(3)))
    text = ctl("test-rules", "--rules", str(rules), str(path)).stdout.decode()
    assert "Over budget:  site-slow took over 50 ms on a line 1x, then quarantined (2 lines not tried)" in text
