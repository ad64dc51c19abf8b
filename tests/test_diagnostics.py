"""test-rules' diagnostics: the chunk-level fast path finds exactly what the per-line reference
path (diagnose_slow, the loop test-rules used to run) finds, line numbers and samples included."""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matchers import MATCHERS

from logwatch.cli.ruletest import read_chunks
from logwatch.parsing.diagnostics import FRAMED, Diagnostics, Findings, diagnose_slow
from logwatch.parsing.framing import Framer
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import default_rules_dirs, load_ruleset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "logs"
NOW = 1795000000.0          # a fixed clock: syslog years do not move under the test


def both(data: bytes, matched: set[int], matcher: str, chunk: int) -> tuple[Findings, Findings]:
    """(fast, slow) findings over `data` cut into chunks of about `chunk` bytes."""
    fast = Diagnostics(Framer(lambda: NOW), matcher, sample=10**9)
    slow = Findings(sample=10**9)
    framer = Framer(lambda: NOW)
    line_no = 1
    for piece in read_chunks(io.BytesIO(data), chunk):
        fast.scan(piece, line_no, matched)
        diagnose_slow(framer, piece, line_no, matched, slow)
        line_no += piece.count(b"\n")
    return fast.findings, slow


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(default_rules_dirs())


@pytest.mark.parametrize("matcher", MATCHERS)
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.log")))
def test_fixture_logs_give_the_same_report(ruleset, matcher: str, name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    parser = Parser(ruleset, clock=lambda: NOW, matcher=matcher)
    matched = {event.line for event in parser.parse(data)}
    for chunk in (1 << 20, 300):          # one chunk, and many small ones
        fast, slow = both(data, matched, matcher, chunk)
        assert fast == slow
    assert slow.unframed_count + slow.suspect_count > 0     # there is something to find


def test_all_fixtures_together_every_line_classified_alike(ruleset) -> None:
    data = b"".join((FIXTURES / p).read_bytes() for p in sorted(p.name for p in FIXTURES.glob("*.log")))
    parser = Parser(ruleset, clock=lambda: NOW)
    matched = {event.line for event in parser.parse(data)}
    fast, slow = both(data, matched, "re", 4096)
    assert fast == slow and slow.unframed_count > 10 and slow.suspect_count > 3


def test_common_shape_is_always_framed() -> None:
    """FRAMED's promise, on the edge cases of its pieces: whatever it takes, frame() takes."""
    framer = Framer(lambda: NOW)
    stamps = ["Feb 29 00:00:00", "Feb 28 23:59:59", "Jan 31 12:00:00", "Nov 30 01:02:03",
              "Nov  1 01:02:03", "Nov 01 01:02:03", "Dec 31 23:59:59.123456789"]
    heads = ["mx postfix/smtpd[1]:", "a p:", "h;x prog\\x:", "h<x> prog:", "1.2.3.4 p[0]:x"]
    for stamp in stamps:
        for head in heads:
            line = f"{stamp}  {head} message"
            assert FRAMED.match(line.encode()), line
            assert framer.frame(line) is not None, line
    for bad in ["Nov 31 01:02:03 mx p:", "Feb 30 01:02:03 mx p:", "Nov 00 01:02:03 mx p:",
                "Nov 21 24:00:00 mx p:", "Nov 21 10:60:00 mx p:", "Nov 21 10:00:60 mx p:",
                "Nov 21 10:00:00 mx: p:", "Nov 21 10:00:00 <mail.info> p:", "Foo 21 10:00:00 m p:",
                "Nov 21 10:00:00 m\u00a0x p:"]:
        assert not FRAMED.match(bad.encode()), bad


# Pieces of lines, good and bad, that the generated logs are made of.
STAMPS = ["Nov 21 10:00:00", "Nov  1 10:00:00", "Nov 01 10:00:00", "Nov 31 10:00:00",
          "Feb 29 10:00:00", "Feb 30 10:00:00", "Apr 31 00:00:00", "Nov 21 24:00:00",
          "Nov 21 10:60:00", "Nov 21 10:00:60", "Nov 00 10:00:00", "Nov 21 10:00:00.123456",
          "Nov 21 2026 10:00:00", "<22>Nov 21 10:00:00", "Nov 21 10:00:00 <mail.info>",
          "2026-11-21T10:00:00+01:00", "1 2026-11-21T10:00:00Z", "2026-11-21 10:00:00",
          "@4000000065a1b2c3000000001", "Xyz 21 10:00:00", "", "Nov 21"]
HOSTS = ["mx", "mx.example.org", "host:", "<weird", "2001:db8::1", "h\u00f3st", "a\u00a0b",
         "", "192.0.2.1", "h\u2028x"]
TAGS = ["postfix/smtpd[123]:", "sshd[9]:", "dovecot:", "pop3-login: Info:", "prog[x]:", "prog",
        "imap-login:", "[1]:", "exim[5]", "1VxPit-000MMd-U4"]
MESSAGES = ["connect from unknown[192.0.2.1]", "authentication FAILED for bob",
            "NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 550 5.1.1 <x@y>: User unknown",
            "Bad protocol", "badge", "too  many", "TOO MANY errors", "Not Found", "unknown",
            "UnKnOwN[", "ILLEGAL user", "all good", "\r\x00\xff\xfe", "relay access Denied",
            "mismatch", "SASL LOGIN authentication failed: UGFzc3dvcmQ6", " ", "x\ry fail"]


def _line(rng: random.Random) -> bytes:
    parts = [rng.choice(STAMPS), rng.choice(HOSTS), rng.choice(TAGS), rng.choice(MESSAGES)]
    separators = [rng.choice([" ", "  ", "\t", ""]) for _ in range(3)]
    text = parts[0]
    for sep, part in zip(separators, parts[1:], strict=True):
        text += sep + part
    raw = text.encode("utf-8", "surrogateescape") if rng.random() < 0.9 else rng.randbytes(20)
    return raw.replace(b"\n", b" ") if rng.random() < 0.97 else b"   "


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), lines=st.integers(1, 400), chunk=st.integers(40, 5000),
       matcher=st.sampled_from(MATCHERS), final_newline=st.booleans(),
       matched_share=st.floats(0, 1))
def test_generated_logs_give_the_same_report(seed: int, lines: int, chunk: int, matcher: str,
                                             final_newline: bool, matched_share: float) -> None:
    rng = random.Random(seed)
    data = b"\n".join(_line(rng) for _ in range(lines)) + (b"\n" if final_newline else b"")
    matched = {n for n in range(1, lines + 1) if rng.random() < matched_share}
    fast, slow = both(data, matched, matcher, chunk)
    assert fast == slow


def test_test_rules_reports_wall_time_and_the_reference_findings(ruleset, tmp_path) -> None:
    """The real `logwatchctl test-rules`: end-to-end wall time, and the slow path's findings."""
    data = b"".join(p.read_bytes() for p in sorted(FIXTURES.glob("*.log"))) * 3
    path = tmp_path / "mixed.log"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "logwatch.cli.ruletest", "test-rules", "--sample", "7",
                          str(path)], capture_output=True, timeout=120, check=True).stdout
    assert re.search(rb"\nWall time: +\d+\.\d{3} s \([\d,]+ lines/s", out), out
    parser = Parser(ruleset)
    matched = {event.line for event in parser.parse(data)}
    slow = Findings(sample=7)
    diagnose_slow(Framer(), data, 1, matched, slow)
    expected = [f"Lines not understood (unknown syslog framing): {slow.unframed_count}"]
    expected += [f"  {n}: {raw.decode('utf-8', 'replace')}" for n, raw in slow.unframed]
    expected += ["", f"Unmatched lines that look like failures: {slow.suspect_count}"]
    expected += [f"  {n}: {raw.decode('utf-8', 'replace')}" for n, raw in slow.suspects]
    text = out.decode("utf-8", "replace")
    assert "\n".join(expected) in text, text
    assert len(slow.unframed) == len(slow.suspects) == 7


def test_test_rules_numbers_lines_across_chunks(tmp_path) -> None:
    """Findings past the first 4 MiB chunk carry their real line numbers."""
    filler = b"Nov 21 10:00:00 mx postfix/qmgr[7]: 0123456789: removed\n"
    count = (9 << 20) // len(filler)                          # three chunks
    tail = (b"no framing on this line\n"
            b"Nov 21 10:00:01 mx exotic[5]: login FAILED for bob from 203.0.113.9\n")
    path = tmp_path / "long.log"
    path.write_bytes(filler * count + tail)
    out = subprocess.run([sys.executable, "-m", "logwatch.cli.ruletest", "test-rules", str(path)],
                         capture_output=True, timeout=120, check=True).stdout.decode()
    assert f"Lines read:   {count + 2}\n" in out
    assert f"(unknown syslog framing): 1\n  {count + 1}: no framing on this line\n" in out
    assert f"look like failures: 1\n  {count + 2}: Nov 21 10:00:01 mx exotic[5]" in out


@pytest.mark.parametrize("matcher", MATCHERS)
def test_event_lines_left_out_by_offset_change_nothing(ruleset, matcher: str) -> None:
    """test-rules hands over where the event lines start, so the failure words are not looked
    for in them: the findings are those of the per-line reference, line numbers included."""
    data = b"".join((FIXTURES / p).read_bytes() for p in sorted(p.name for p in FIXTURES.glob("*.log")))
    data += b"Nov 21 10:00:00 mx p[1]: a last line, failed, without newline"
    for size in (1 << 20, 300):
        parser = Parser(ruleset, clock=lambda: NOW, matcher=matcher)
        fast = Diagnostics(Framer(lambda: NOW), matcher, sample=10**9)
        slow, framer, matched = Findings(sample=10**9), Framer(lambda: NOW), set()
        line_no = 1
        for piece in read_chunks(io.BytesIO(data), size):
            events, starts = parser.parse_marked(piece, line_no)
            assert [e.line for e in events] == [line_no + piece.count(b"\n", 0, s) for s in starts]
            matched.update(e.line for e in events)
            fast.scan(piece, line_no, matched, starts)
            diagnose_slow(framer, piece, line_no, matched, slow)
            line_no += piece.count(b"\n")
        assert fast.findings == slow and slow.suspect_count > 3 and len(matched) > 50
