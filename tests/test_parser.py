"""The fast chunk parser: same verdict as the slow reference path on every line, line numbers,
bad input skipped and counted, scan passes finding every literal."""

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import default_rules_dirs, load_ruleset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from maillog import generate  # noqa: E402
from matchers import MATCHERS  # noqa: E402

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC).timestamp()
FIXTURES = Path(__file__).parent / "fixtures" / "logs"


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(default_rules_dirs())


def parser(ruleset, matcher="auto"):
    return Parser(ruleset, clock=lambda: NOW, matcher=matcher)


def slow_events(ruleset, data: bytes):
    p = parser(ruleset)
    out = []
    for number, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
        event = p.parse_line(line, number)
        if event is not None:
            out.append(event)
    return out


def corpus_bytes() -> bytes:
    parts = [generate(30_000, seed=7)]
    parts += [p.read_bytes() for p in sorted(FIXTURES.glob("*.log"))]
    shared = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "fail2ban-logs"
    if shared.is_dir():
        parts += [p.read_bytes() for p in sorted(shared.iterdir()) if p.name != "README.md"]
    return b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts)


@pytest.mark.parametrize("matcher", MATCHERS)
def test_fast_path_classifies_every_line_as_the_slow_path(ruleset, matcher):
    data = corpus_bytes()
    p = parser(ruleset, matcher)
    fast = p.parse(data)
    slow = slow_events(ruleset, data)
    assert len(fast) > 1000
    assert fast == slow
    assert p.stats.events == len(fast) and sum(p.stats.by_rule.values()) == len(fast)
    assert p.stats.candidates >= len(fast)


@pytest.mark.parametrize("matcher", MATCHERS)
@pytest.mark.parametrize("size", [1, 7, 4096, 65536])
def test_chunking_does_not_change_events(ruleset, size, matcher):
    data = generate(3000, seed=11)
    whole = parser(ruleset, matcher).parse(data)
    p = parser(ruleset, matcher)
    lines = data.split(b"\n")[:-1]
    got, first = [], 1
    for i in range(0, len(lines), size):
        chunk = b"\n".join(lines[i:i + size]) + b"\n"
        got += p.parse(chunk, first)
        first += len(lines[i:i + size])
    assert got == whole
    assert p.stats.lines == len(lines)


def test_line_numbers_point_at_the_line(ruleset):
    data = generate(2000, seed=5)
    lines = data.split(b"\n")
    events = parser(ruleset).parse(data)
    assert events
    for event in events:
        assert event.ip.split("/")[0] in lines[event.line - 1].decode().replace("::ffff:", "")


@pytest.mark.parametrize("matcher", MATCHERS)
def test_bad_input_is_skipped_and_counted(ruleset, matcher):
    good = generate(200, seed=3)
    expected = parser(ruleset, matcher).parse(good)
    garbage = bytes(range(256)) * 50 + b"\n" + b"\xff\xfe\x00 User unknown \x00\n" + b"A" * 2_000_000 + b"\n"
    mixed = garbage + good + garbage
    p = parser(ruleset, matcher)
    got = p.parse(mixed)
    assert [(e.kind, e.ip, e.user) for e in got] == [(e.kind, e.ip, e.user) for e in expected]
    assert p.stats.unknown_framing >= 2


def test_invalid_ip_yields_no_event(ruleset):
    line = (b"Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[999.1.1.1]: "
            b"550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in local recipient "
            b"table; from=<x@y.z> to=<a@example.org> proto=ESMTP helo=<x>\n")
    p = parser(ruleset)
    assert p.parse(line) == []
    assert p.parse_line(line) is None


def test_ipv4_mapped_and_ipv6_are_normalised(ruleset):
    tmpl = ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[{}]: 550 5.1.1 "
            "<a@example.org>: Recipient address rejected: User unknown in local recipient table; "
            "from=<x@y.z> to=<a@example.org> proto=ESMTP helo=<x>\n")
    data = (tmpl.format("::ffff:192.0.2.9") + tmpl.format("2001:DB8:0:0::0:1")).encode()
    assert [e.ip for e in parser(ruleset).parse(data)] == ["192.0.2.9", "2001:db8::1"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda a, b: ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from " + a
                            + "[" + b + "]: 550 5.1.1 <x>: Recipient address rejected: User unknown").encode(
                                "utf-8", "surrogatepass"),
              st.text(max_size=40), st.text(max_size=40)),
    st.builds(lambda a: ("Nov 21 10:00:00 mx dovecot: imap-login: Login: user=<" + a
                         + ">, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, session=<x>").encode(
                             "utf-8", "surrogatepass"), st.text(max_size=60)),
), max_size=20))
def test_no_generated_input_crashes_the_parser(ruleset, lines):
    data = b"\n".join(lines) + b"\n"
    p = parser(ruleset)
    events = p.parse(data)
    assert p.stats.lines == data.count(b"\n")
    assert p.stats.candidates >= p.stats.events == len(events)
    for event in events:
        assert event.time.tzinfo is not None
        assert event.ip


def test_parse_bench_runs_and_both_paths_agree():
    """bench/parse_bench.py on a small log: it runs, and says yes for every matcher."""
    import subprocess

    bench = Path(__file__).resolve().parents[1] / "bench"
    out = subprocess.run([sys.executable, str(bench / "parse_bench.py"), "--lines", "20000",
                          "--runs", "1"], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    for matcher in MATCHERS:
        assert f"logwatchd parser, {matcher} matcher:" in out.stdout
        assert f"fast path ({matcher}) == slow reference path on every line: yes" in out.stdout
    out = subprocess.run([sys.executable, str(bench / "matcher_bench.py"), "--lines", "5000",
                          "--runs", "1"], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0 and "re, pivot passes" in out.stdout, out.stdout + out.stderr
