"""fail2ban's annotated mail-daemon sample logs against our rules (read from ../shared, never copied).

Every line annotated `"match": true` must yield a failure event carrying the annotated host as
its IP; every line annotated `"match": false` must yield no failure event. Exceptions are listed
below, each with its reason, so that any NEW miss fails the test, and so does an exception that
no longer applies. A wrong IP is never an allowed exception.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from matchers import MATCHERS

from logwatch.parsing.events import FAILURE_KINDS, normalize_ip
from logwatch.parsing.framing import Framer
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import Ruleset, load_ruleset

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared/corpus/fail2ban-logs"
# fail2ban's harness runs with "now" = 2005-08-14 12:00 CEST; year-less dates resolve against it.
CORPUS_NOW = 1124013600.0

COVERED = (
    "postfix", "dovecot", "sendmail-auth", "sendmail-reject", "courier-auth", "courier-smtp",
    "cyrus-imap", "uwimap-auth", "qmail", "exim", "exim-spam", "perdition", "solid-pop3d", "sieve",
)
NOT_COVERED = {
    "domino-smtp": "Domino writes its own console/log.nsf format (no syslog framing, no program tag)",
    "oracleims": "Oracle Messaging Server logs XML records (<co .../>), not syslog lines",
    "kerio": "Kerio Connect writes its own security.log format, not syslog",
    "assp": "ASSP writes its own maillog.txt format, not syslog",
}

_AGGRESSIVE = "fail2ban counts this only in its aggressive mode"
_NO_ATTEMPT = ("connection closed without any authentication attempt (TLS scans, probes): no "
               "login failed; " + _AGGRESSIVE)
_DISCONNECT = ("'disconnect ... auth=0/1' summary: the SASL 'authentication failed' warning "
               "Postfix logs for the same AUTH already counts it; counting the summary too would "
               "count one attempt twice (fail2ban: ddos/aggressive modes only)")

# (file, line number of the log line) -> why a "match": true line yields no failure event.
KNOWN_MISSES: dict[tuple[str, int], str] = {
    ("postfix", 158): "'hostname X does not resolve to address IP' is a DNS warning, not client "
                      "misbehaviour; " + _AGGRESSIVE,
    ("postfix", 167): _DISCONNECT,
    ("postfix", 169): _DISCONNECT,
    ("postfix", 171): _DISCONNECT,
    ("postfix", 181): _DISCONNECT,
    ("sendmail-reject", 93): "'from=..., nrcpts=0, relay=' holds the IP but not the reason; the "
                             "'User unknown' lines of the same queue id hold no IP. Joining lines "
                             "by queue id is beyond a line rule (and nrcpts=0 alone is no offence)",
    ("sendmail-reject", 103): "same as line 93 (FreeBSD 'syslogd -v' style)",
    ("dovecot", 159): _NO_ATTEMPT,
    ("dovecot", 161): _NO_ATTEMPT,
    ("dovecot", 164): _NO_ATTEMPT,
    ("dovecot", 166): _NO_ATTEMPT,
    ("dovecot", 168): _NO_ATTEMPT,
    ("dovecot", 170): _NO_ATTEMPT,
    ("dovecot", 173): "disconnected before the auth service was ready: " + _NO_ATTEMPT,
    ("dovecot", 175): "client started but did not finish SASL, so no password was rejected; "
                      + _AGGRESSIVE,
    ("dovecot", 177): _NO_ATTEMPT,
    ("dovecot", 180): "disconnected during the TLS handshake: " + _NO_ATTEMPT,
    ("dovecot", 182): "disconnected during the TLS handshake: " + _NO_ATTEMPT,
    ("exim", 40): "fail2ban's journal test shape: syslog host and tag but no date at the start "
                  "of the line, so no framing applies (our journald source frames entries itself)",
    ("exim", 122): "'no host name found for IP address' is reverse DNS, not client misbehaviour; "
                   + _AGGRESSIVE,
    ("exim", 124): "'no IP address found for host' is forward DNS, not client misbehaviour; "
                   + _AGGRESSIVE,
    ("exim", 126): "same as line 124",
}

# (file, line number) -> why a "match": false line deliberately yields a failure event.
DELIBERATE_COUNTS: dict[tuple[str, int], str] = {
    ("postfix", 82): "fail2ban's 'errors' mode counts only 'too many errors'; we count improper "
                     "pipelining as 'rejected' as fail2ban's normal mode does (line 68)",
    ("postfix", 147): "AUTH with a mechanism the server does not offer counts as 'rejected' "
                      "(weight 0 by default), not as a failed password; " + _AGGRESSIVE,
}

# Lines whose framing logwatch/parsing/framing.py does not (yet) understand. While unframed they make
# their file's test xfail with a note; once framed they must match like any other line.
FRAMING_GAPS: dict[tuple[str, int], str] = {
    ("sendmail-reject", 127): "FreeBSD 'syslogd -v' prefix '<mail.notice>' before the host",
    ("sendmail-reject", 130): "FreeBSD 'syslogd -v' prefix '<mail.notice>' before the host",
}
# Exim's own mainlog ("2013-06-02 09:22:06 [pid] message", no host, no tag).
EXIM_OWN_FILES = ("exim", "exim-spam")


def exim_mainlog_framed() -> bool:
    """True when the framing understands exim's own mainlog lines as program 'exim'."""
    frame = Framer(lambda: CORPUS_NOW).frame(
        "2013-06-02 09:22:06 SMTP call from [192.0.2.109] dropped: too many syntax errors")
    return frame is not None and frame.program.startswith("exim")


@dataclass
class Sample:
    file: str
    line_no: int
    text: str
    match: bool
    host: str | None
    modes: list[str]


@dataclass
class FileResult:
    name: str
    true_lines: int = 0
    true_ok: int = 0
    false_lines: int = 0
    false_ok: int = 0
    allowed_misses: list[int] = field(default_factory=list)
    deliberate: list[int] = field(default_factory=list)
    unframed: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


_DIRECTIVE = re.compile(r"^#+ ?(failJSON|(?:file|filter)Options|addFILE):(.+)$")


def _modes(options: object) -> list[str]:
    items = options if isinstance(options, list) else [options]
    return [str(o.get("mode", "default")) if isinstance(o, dict) else "?" for o in items]


def read_samples(path: Path) -> Iterator[Sample]:
    """The annotated log lines of one corpus file, with the filter modes they are tested in."""
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    modes = ["default"]
    pending: dict | None = None
    for number, line in enumerate(lines, 1):
        m = _DIRECTIVE.match(line)
        if m:
            payload = json.loads(m.group(2))
            if m.group(1) == "failJSON":
                pending = payload
            elif m.group(1) == "filterOptions":
                modes = _modes(payload)
            continue
        if pending is None or line.startswith("#") or not line.strip():
            continue
        yield Sample(path.name, number, line, bool(pending.get("match")), pending.get("host"),
                     modes)
        pending = None


def _is_ip(text: str | None) -> bool:
    try:
        ipaddress.ip_address(text or "")
    except ValueError:
        return False
    return True


_EXIM_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def _exim_rules_on_message(ruleset: Ruleset, line: str) -> tuple[str, str | None] | None:
    """(kind, ip) of the first exim rule matching the text after an exim mainlog time stamp."""
    message = _EXIM_STAMP.sub("", line, count=1)
    for rule in ruleset.for_program("exim"):
        m = rule.regex.search(message)
        if m:
            return rule.kind, normalize_ip(m.group("ip"))
    return None


def evaluate(name: str) -> FileResult:
    """Run one corpus file through the fast path and compare with the slow path and annotations."""
    ruleset = load_ruleset([REPO / "rules"])
    result = FileResult(name)
    framer = Framer(lambda: CORPUS_NOW)
    exim_gap = name in EXIM_OWN_FILES and not exim_mainlog_framed()
    fast_parsers = [Parser(ruleset, clock=lambda: CORPUS_NOW, matcher=m) for m in MATCHERS]
    slow_parser = Parser(ruleset, clock=lambda: CORPUS_NOW)
    for sample in read_samples(CORPUS / name):
        raw = sample.text.encode("utf-8", "surrogateescape")
        fasts = [p.parse(raw + b"\n") for p in fast_parsers]
        fast = fasts[0]
        slow = slow_parser.parse_line(raw)
        event = fast[0] if fast else None
        where = f"{name}:{sample.line_no}"
        if any(other != fast for other in fasts[1:]):
            result.failures.append(f"{where}: the matchers {MATCHERS} disagree: {fasts}")
        key = (name, sample.line_no)
        frame = framer.frame(sample.text)
        if key not in KNOWN_MISSES and (
            (frame is None and key in FRAMING_GAPS)
            or (exim_gap and (frame is None or not frame.program.startswith("exim")))
        ):
            if fast or slow is not None:
                result.failures.append(f"{where}: unframed line yields {fast or slow}")
                continue
            result.unframed.append(sample.line_no)
            if not exim_gap:
                continue
            # Until the framing knows exim's mainlog, check the exim rules on the message text.
            hit = _exim_rules_on_message(ruleset, sample.text)
            if sample.match and (hit is None or hit[0] not in FAILURE_KINDS
                                 or hit[1] != normalize_ip(sample.host or "")):
                result.failures.append(f"{where}: exim rules give {hit} on the message, "
                                       f"expected a failure for {sample.host}")
            if not sample.match and hit is not None and hit[0] in FAILURE_KINDS:
                result.failures.append(f"{where}: exim rules give {hit}, expected none")
            continue
        if len(fast) > 1 or (event is None) != (slow is None) or (
            event is not None and slow is not None and (event.rule, event.ip) != (slow.rule, slow.ip)
        ):
            result.failures.append(f"{where}: fast path {fast} differs from slow path {slow}")
            continue
        failure = event if event is not None and event.kind in FAILURE_KINDS else None
        if sample.match:
            result.true_lines += 1
            if failure is None:
                if key in KNOWN_MISSES:
                    result.allowed_misses.append(sample.line_no)
                else:
                    result.failures.append(f"{where}: NEW MISS (expected {sample.host}, fail2ban modes "
                                           f"{sample.modes}): "
                                           f"{sample.text[:160]}")
                continue
            if key in KNOWN_MISSES:
                result.failures.append(f"{where}: listed as a known miss but now matches "
                                       f"({failure.rule}); remove it from KNOWN_MISSES")
            if _is_ip(sample.host) and failure.ip != normalize_ip(sample.host or ""):
                result.failures.append(f"{where}: WRONG IP {failure.ip} (expected {sample.host}) "
                                       f"by rule {failure.rule}")
                continue
            result.true_ok += 1
        else:
            result.false_lines += 1
            if failure is None:
                result.false_ok += 1
                if key in DELIBERATE_COUNTS:
                    result.failures.append(f"{where}: listed in DELIBERATE_COUNTS but yields no "
                                           "failure event; remove it")
            elif key in DELIBERATE_COUNTS:
                result.deliberate.append(sample.line_no)
                if sample.host and _is_ip(sample.host) and failure.ip != normalize_ip(sample.host):
                    result.failures.append(f"{where}: WRONG IP {failure.ip}")
            else:
                result.failures.append(f"{where}: unexpected {failure.kind} event by rule "
                                       f"{failure.rule} ip={failure.ip}: {sample.text[:160]}")
    return result


_RESULTS: dict[str, FileResult] = {}


@pytest.fixture(scope="module", autouse=True)
def coverage_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: a per-file coverage table on the terminal (independent of -s)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not _RESULTS:
        return
    lines = ["", "fail2ban corpus coverage (match:true lines caught / total; "
             "match:false lines kept clean / total)",
             f"  {'file':<16} {'true ok':>9} {'known miss':>10} {'false ok':>9} "
             f"{'deliberate':>10} {'unframed':>8}"]
    for name in COVERED:
        r = _RESULTS.get(name)
        if r is not None:
            lines.append(
                f"  {name:<16} {r.true_ok:>4}/{r.true_lines:<4} {len(r.allowed_misses):>10} "
                f"{r.false_ok:>4}/{r.false_lines:<4} {len(r.deliberate):>10} {len(r.unframed):>8}")
    lines += [f"  {name:<16} not covered: {why}" for name, why in NOT_COVERED.items()]
    # The reporter's stream is captured during fixture teardown; suspend capture to show it.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        for line in lines:
            reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.mark.parametrize("name", COVERED)
def test_corpus_file(name: str) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"fail2ban corpus not found at {CORPUS} (CI provides ../shared/corpus)")
    if not (CORPUS / name).is_file():
        pytest.fail(f"corpus file {name} missing from {CORPUS}")
    result = evaluate(name)
    _RESULTS[name] = result
    assert result.true_lines + result.false_lines + len(result.unframed) > 0, \
        f"no annotated lines read from {name}"
    assert not result.failures, "\n".join(result.failures)
    if result.unframed:
        pytest.xfail(f"{len(result.unframed)} line(s) of {name} await framing support in "
                     f"logwatch/parsing/framing.py (lines {result.unframed[:8]}...)")


def test_exception_lists_name_real_lines() -> None:
    """Every allow-listed (file, line) is an annotated sample line of a covered file."""
    if not CORPUS.is_dir():
        pytest.skip(f"fail2ban corpus not found at {CORPUS} (CI provides ../shared/corpus)")
    known = {(s.file, s.line_no) for name in COVERED for s in read_samples(CORPUS / name)}
    listed = set(KNOWN_MISSES) | set(DELIBERATE_COUNTS) | set(FRAMING_GAPS)
    stale = sorted(key for key in listed if key not in known)
    assert not stale, f"exception entries that name no annotated line: {stale}"
