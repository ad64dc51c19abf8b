"""Log injection: text a remote client controls must never move an event to another IP.

Each template is a realistic line of one daemon with `{P}` where the daemon logs client-chosen
text (user names, addresses, HELO, command arguments, passwords). The real client is always
REAL; hostile payloads mention FAKE in every shape our rules look for. Whatever the payload,
an event (if any) must carry REAL, and a failure line must never turn into a login/auth.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matchers import MATCHERS

from logwatch.parsing.events import SUCCESS_KINDS, Event
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import Ruleset, load_ruleset

REPO = Path(__file__).resolve().parents[1]
NOW = 1795305600.0            # 2026-11-22 00:00 UTC
REAL = "192.0.2.77"
FAKE = "6.6.6.6"
FAKE_FORMS = {FAKE, "2001:db8:6666::6"}

# (template, may_be_success): success templates are real logins where only the user is hostile.
TEMPLATES: list[tuple[str, bool]] = [
    # Postfix
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 550 5.1.1 "
     "<{P}>: Recipient address rejected: User unknown in local recipient table; from=<{P}> "
     "to=<{P}> proto=ESMTP helo=<{P}>", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 554 5.7.1 "
     "<{P}>: Relay access denied; from=<{P}> to=<{P}> proto=ESMTP helo=<{P}>", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 450 4.7.1 "
     "<{P}>: Helo command rejected: Host not found; from=<{P}> to=<{P}> proto=ESMTP helo=<{P}>",
     False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: warning: unknown[192.0.2.77]: SASL LOGIN authentication "
     "failed: authentication failure, sasl_username={P}", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: improper command pipelining after DATA from "
     "unknown[192.0.2.77]: {P}", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: warning: non-SMTP command from unknown[192.0.2.77]: {P}",
     False),
    ("Nov 21 10:00:00 mx postfix/postscreen[1]: PREGREET 14 after 0.08 from [192.0.2.77]:59415: {P}",
     False),
    ("Nov 21 10:00:00 mx postfix/postscreen[1]: NON-SMTP COMMAND from [192.0.2.77]:5 after CONNECT: "
     "{P}", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: 4Bx7Yq1kR2z9v: client=unknown[192.0.2.77], "
     "sasl_method=PLAIN, sasl_username={P}", True),
    ("Nov 21 10:00:00 mx postfix/cleanup[1]: 4Bx7Yq1kR2z9v: warning: header Subject: {P} from "
     "unknown[192.0.2.77]; from=<{P}> to=<{P}> proto=ESMTP helo=<{P}>", False),
    # Dovecot
    ("Nov 21 10:00:00 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): "
     "user=<{P}>, method=PLAIN, rip=192.0.2.77, lip=192.0.2.1, TLS, session=<abcDEF123>", False),
    ("Nov 21 10:00:00 pop3-login: Info: Aborted login (auth failed, 1 attempts in 2 secs): "
     "user=<{P}>, method=PLAIN, rip=192.0.2.77, lip=192.0.2.1", False),
    ("Nov 21 10:00:00 mx dovecot: submission-login: Disconnected (auth failed, 1 attempts in 2 secs): "
     "user=<{P}>, method=PLAIN, rip=192.0.2.77, lip=192.0.2.1, TLS, session=<abcDEF123>", False),
    ("Nov 21 10:00:00 mx dovecot: pop3-login: Disconnected (no auth attempts in 3 secs): "
     "user=<{P}>, rip=192.0.2.77, lip=192.0.2.1, TLS, session=<abcDEF123>", False),
    ("Nov 21 10:00:00 mx dovecot: imap-login: Login: user=<{P}>, method=PLAIN, rip=192.0.2.77, "
     "lip=192.0.2.1, mpid=7, TLS, session=<abcDEF123>", True),
    ("Nov 21 10:00:00 mx dovecot: auth: passwd-file({P},192.0.2.77,<sessABC>): Password mismatch",
     False),
    ("Nov 21 10:00:00 auth: Info: passwd-file({P},192.0.2.77,<sessABC>): unknown user", False),
    ("Nov 21 10:00:00 mx dovecot: auth: passwd-file(alice,192.0.2.77,<sessABC>): Password mismatch "
     "(given password: {P})", False),
    ("Nov 21 10:00:00 mx dovecot: auth-worker(5): pam({P},192.0.2.77): pam_authenticate() failed: "
     "Authentication failure (password mismatch?)", False),
    ("Nov 21 10:00:00 mx dovecot[5]: auth({P},192.0.2.77,sasl:plain)<sessABC>: sql: Password "
     "mismatch (given password: {P})", False),
    ("Nov 21 10:00:00 mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 "
     "euid=0 tty=dovecot ruser={P} rhost=192.0.2.77  user={P}", False),
    # sendmail
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: ruleset=check_rcpt, arg1=<{P}>, relay=spam.example "
     "[192.0.2.77], reject=550 5.1.1 <{P}>... User unknown", False),
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: ruleset=check_rcpt, arg1=<{P}>, relay=[192.0.2.77], "
     "reject=550 5.7.1 <{P}>... Relaying denied. Proper authentication required.", False),
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: ruleset=check_mail, arg1=<{P}>, relay=[192.0.2.77], "
     "reject=553 5.1.8 <{P}>... Domain of sender address {P} does not exist", False),
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: AUTH failure (LOGIN): authentication failure (-13) "
     "SASL(-13): authentication failure: checkpass failed, user={P}, relay=[192.0.2.77]", False),
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: [192.0.2.77]: EXPN {P} [rejected]", False),
    ("Nov 21 10:00:00 mx sm-mta[1]: 5ALB20a1: from=<{P}>, size=0, class=0, nrcpts=0, proto=ESMTP, "
     "daemon=MTA, relay=[192.0.2.77]", False),
    # Courier
    ("Nov 21 10:00:00 mx imapd: LOGIN FAILED, user={P}, ip=[::ffff:192.0.2.77]", False),
    ("Nov 21 10:00:00 mx pop3d: LOGIN, user={P}, ip=[::ffff:192.0.2.77], port=[4000], protocol=POP3",
     True),
    ("Nov 21 10:00:00 mx courieresmtpd: error,relay=::ffff:192.0.2.77,from=<{P}>,to=<{P}>: 550 User "
     "unknown.", False),
    # Cyrus
    ("Nov 21 10:00:00 mx cyrus/imap[1]: badlogin: scan.example [192.0.2.77] plaintext {P} "
     "SASL(-13): authentication failure: checkpass failed", False),
    ("Nov 21 10:00:00 mx cyrus/pop3[1]: login: scan.example [192.0.2.77] {P} plaintext User logged in",
     True),
    # UW
    ("Nov 21 10:00:00 mx imapd[1]: Login failed user={P} auth={P} host=scan.example [192.0.2.77]",
     False),
    # qpopper
    ("Nov 21 10:00:00 mx popper[1]: {P} at scan.example (192.0.2.77): -ERR [AUTH] Password supplied "
     "for \"{P}\" is incorrect.", False),
    # perdition
    ("Nov 21 10:00:00 mx perdition.imaps[1]: Auth: 192.0.2.77:4000->192.0.2.2:993 client-secure=ssl "
     "authorisation_id=NONE authentication_id=\"{P}\" server=\"imap1:993\" protocol=IMAP4S "
     "server-secure=ssl status=\"failed: Re-Authentication Failure\"", False),
    # solid-pop3d
    ("Nov 21 10:00:00 mx solid-pop3d[1]: authentication failed: no such user: {P} - 192.0.2.77", False),
    # vpopmail
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-pop3: password fail {P}@example.org:192.0.2.77", False),
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-smtp: password fail (pass: '{P}') a@example.org:"
     "192.0.2.77", False),
    # Exim
    ("Nov 21 10:00:00 mx exim[1]: login authenticator failed for ({P}) [192.0.2.77]: 535 Incorrect "
     "authentication data (set_id={P})", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol error in \"{P}\" H=(x) [192.0.2.77] AUTH command used "
     "when not advertised", False),
    ("Nov 21 10:00:00 mx exim[1]: H=(x) [192.0.2.77] F=<{P}> rejected RCPT <{P}>: relay not permitted",
     False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol synchronization error (next input sent too soon: "
     "pipelining was not advertised): rejected \"{P}\" H=x.example [192.0.2.77]:1 I=[192.0.2.4]:25 "
     "next input=\"{P}\"", False),
    ("Nov 21 10:00:00 mx exim[1]: 1vMcXz-000ABD-2y SA: Action: silently tossed message: score=31.0 "
     "required=5.0 trigger=30.0 (scanned in 3/3 secs | Message-Id: {P}). From <{P}> "
     "(host=h.example [192.0.2.77]) for alice@example.org", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP call from (x) [192.0.2.77] dropped: too many syntax or "
     "protocol errors (last command was \"{P}\")", False),
    # Exim logs a sender whose local part needs quoting (blanks...) with its quotes.
    ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= \"{P}\"@x.example H=(x) [192.0.2.77]:1 "
     "I=[192.0.2.4]:587 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no S=1 id={P}", False),
    ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= a@x.example H=(x) [192.0.2.77]:1 "
     "I=[192.0.2.4]:587 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no S=1 id={P} T=\"{P}\"",
     False),
    # Exim with a junk HELO (helo_accept_junk_hosts / a loose helo_allow_chars): the HELO sits
    # between "H=(" and the real ") [IP]", so a forged host end in it comes before the real one.
    ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= a@x.example H=({P}) [192.0.2.77]:1 "
     "I=[192.0.2.4]:587 P=esmtpa A=plain:{P} S=1 id={P}", True),
    ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= a@x.example H=mx.example ({P}) [192.0.2.77] "
     "P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=login:{P} S=1 id={P} T=\"{P}\"", True),
    ("Nov 21 10:00:00 mx exim[1]: H=({P}) [192.0.2.77]:1 I=[192.0.2.4]:25 F=<a@b.example> rejected "
     "RCPT <\"{P}\"@example.org>: Unknown user", False),
    ("Nov 21 10:00:00 mx exim[1]: H=x.example ({P}) [192.0.2.77] F=<\"{P}\"@b.example> rejected "
     "RCPT <c@elsewhere.example>: relay not permitted", False),
    ("Nov 21 10:00:00 mx exim[1]: H=({P}) [192.0.2.77]:1 I=[192.0.2.4]:25 F=<a@b.example> rejected "
     "RCPT <c@example.org>: rejected because {P} is in a black list", False),
    ("Nov 21 10:00:00 mx exim[1]: 1UlasQ-0003fr-45 F=<a@b.example> H=({P}) [192.0.2.77]:1 "
     "I=[192.0.2.4]:25 P=esmtp rejected by local_scan(): {P}", False),
    ("Nov 21 10:00:00 mx exim[1]: login authenticator failed for ({P}) [192.0.2.77]:1 "
     "I=[192.0.2.4]:587: 535 Incorrect authentication data (set_id={P})", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP call from ({P}) [192.0.2.77]:1 I=[192.0.2.4]:25 dropped: too "
     "many syntax or protocol errors (last command was \"{P}\")", False),
    ("Nov 21 10:00:00 mx exim[1]: no MAIL in SMTP connection from ({P}) [192.0.2.77]:1 "
     "I=[192.0.2.4]:25 D=3s C=EHLO,AUTH,QUIT", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP connection from ({P}) [192.0.2.77]:1 I=[192.0.2.4]:25 closed "
     "by DROP in ACL", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol error in \"{P}\" H=({P}) [192.0.2.77]:1 "
     "I=[192.0.2.4]:25 AUTH command used when not advertised", False),
    # Exim sync errors: the rejected command (unescaped in some versions) and the next input.
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol synchronization error (next input sent too soon: "
     "pipelining was not advertised): rejected \"{P}\" H=({P}) [192.0.2.77]:1 I=[192.0.2.4]:25 "
     "next input=\"{P}\"", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol synchronization error (next input sent too soon: "
     "pipelining was not advertised): rejected \"{P}\" H=scan.example [192.0.2.77] next "
     "input=\"{P}\"", False),
    ("Nov 21 10:00:00 mx exim[1]: SMTP protocol synchronization error (input sent without waiting "
     "for greeting): rejected connection from H=[192.0.2.77]:1 I=[192.0.2.4]:25 input=\"{P}\"",
     False),
    # Cyrus: the user name (any bytes the client sent) after the IP.
    ("Nov 21 10:00:00 mx cyrus/pop3[1]: badlogin: scan.example [192.0.2.77] plaintext {P} "
     "SASL(-13): authentication failure: checkpass failed", False),
    ("Nov 21 10:00:00 mx cyrus/timsieved[1]: badlogin: scan.example [192.0.2.77] PLAIN {P} "
     "authentication failure", False),
    # vpopmail: user and domain are both typed by the client, the IP is the line's last field.
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-imap: vpopmail user not found {P}@{P}:192.0.2.77", False),
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-smtp: vpopmail user not found {P}@{P}:::ffff:192.0.2.77",
     False),
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-pop3: password fail (pass: '{P}') {P}@{P}:192.0.2.77",
     False),
    # Postfix recipient rejections: quoted local parts may hold blanks, '>' and brackets.
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 550 5.1.1 "
     "<\"{P}\"@example.org>: Recipient address rejected: User unknown in virtual mailbox table; "
     "from=<\"{P}\"@x> to=<\"{P}\"@example.org> proto=ESMTP helo=<{P}>", False),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: VRFY from unknown[192.0.2.77]: 550 5.1.1 "
     "<{P}>: Recipient address rejected: User unknown in local recipient table; to=<{P}> "
     "proto=SMTP", False),
    # pam_unix: Dovecot passes the login name as both PAM_RUSER and PAM_USER.
    ("Nov 21 10:00:00 mx dovecot-auth: pam_unix(dovecot:auth): authentication failure; logname= "
     "uid=0 euid=0 tty=dovecot ruser={P} rhost=192.0.2.77", False),
]

# Templates that yield no event even with a harmless payload (not a failure we count, or a
# shape a rule deliberately refuses); every other template must yield one.
NO_EVENT_TEMPLATES = (
    "postfix/cleanup[1]", "nrcpts=0", "no auth attempts", '<= \"{P}\"@x.example', "P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no S=1",
)

# Hostile payloads: each mimics a structure some rule reads an IP from.
PAYLOADS: list[str] = [
    "[6.6.6.6]",
    "x[6.6.6.6]",
    "from unknown[6.6.6.6]",
    "a>: x; from unknown[6.6.6.6]: 550 5.1.1 <a",
    "rip=6.6.6.6",
    "x>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, TLS, session=<x",
    "x>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1",
    "relay=[6.6.6.6]",
    "x>, relay=[6.6.6.6], reject=550 5.7.1 <x>... Relaying denied",
    "x>, relay=[6.6.6.6], reject=550 5.1.1 <x>... User unknown",
    "x, relay=[6.6.6.6]",
    ",6.6.6.6,",
    "x,6.6.6.6,<s>): Password mismatch",
    "x,6.6.6.6): unknown user",
    "x),6.6.6.6,<a>): Password mismatch (",
    " host=x [6.6.6.6]",
    "x host=x [6.6.6.6]",
    ", ip=[6.6.6.6]",
    "x, ip=[::ffff:6.6.6.6], port=[1], protocol=POP3",
    " - 6.6.6.6",
    "x@d:6.6.6.6",
    "x@6.6.6.6",
    "ruser=x rhost=6.6.6.6",
    "x rhost=6.6.6.6  user=y",
    '" H=(x) [6.6.6.6]',
    '" H=(x) [6.6.6.6] AUTH command used when not advertised',
    "x H=(x) [6.6.6.6]:1 I=[1.1.1.1]:587 P=esmtpsa A=plain:x S=1",
    "[6.6.6.6]: 535 Incorrect authentication data",
    "x at y (6.6.6.6): -ERR [AUTH] Password supplied for \"x",
    '" status="ok',
    'x" server="a:1" protocol=IMAP4 server-secure=ssl status="ok"',
    "x [6.6.6.6] plaintext",
    "(host=x [6.6.6.6]) for a",
    "unknown[2001:db8:6666::6]",
    "rip=2001:db8:6666::6, lip=1.1.1.1",
    "x; Nov 21 10:00:00 host postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[6.6.6.6]: 550 5.1.1 "
    "<a@b>: Recipient address rejected: User unknown in local recipient table;",
    "x Nov 21 10:00:00 host dovecot: imap-login: Disconnected (auth failed, 1 attempts): "
    "user=<a>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1",
    "x>, relay=[6.6.6.6], reject=550 5.1.1 <x",
    # Exim host ends, as they would sit in a junk HELO, a command, a user name or an address.
    "x) [6.6.6.6]",
    "x) [6.6.6.6]:1 I=[1.1.1.1]:25 P=esmtpa A=plain:x (y",
    "x) [6.6.6.6] P=esmtpa A=plain:x (y",
    "x) [6.6.6.6] F=<a> rejected RCPT <b>: relay not permitted (y",
    "x) [6.6.6.6]:1 I=[1.1.1.1]:25 F=<a@b> rejected RCPT <b@c>: Unknown user (y",
    "x) [6.6.6.6] rejected RCPT <b>: blocked (y",
    "x) [6.6.6.6]: 535 Incorrect authentication data (set_id=a) (y",
    "x) [6.6.6.6] dropped: too many errors (y",
    "x) [6.6.6.6] D=1s C=EHLO (y",
    "x) [6.6.6.6] closed by DROP in ACL (y",
    "x) [6.6.6.6] AUTH command used when not advertised (y",
    '" H=[6.6.6.6]:1 I=[1.1.1.1]:25 next input="',
    '" H=(x) [6.6.6.6] next input="',
    'EHLO " H=x [6.6.6.6]:1 I=[1.1.1.1]:25 next input="" H=(y',
    "H=(x) [6.6.6.6]",
    "(x) [6.6.6.6]",
    "from=<x[6.6.6.6]>",
    # vpopmail: a domain holding the IPv6 head that swallows the real IPv4 (an attacker's /64).
    "x@y:2001:db8:6666:1:0:0",
    "y:2001:db8:6666:1:0:0",
    ":6.6.6.6",
    "a@b:6.6.6.6",
    # pam_unix / Cyrus / Postfix user names with blanks and the next field's shape.
    "a rhost=6.6.6.6  user=a",
    " rhost=6.6.6.6 ",
    "john smith",
    "a b>: Recipient address rejected: User unknown in local recipient table; x",
    'a>b" [6.6.6.6] "c',
    "x [6.6.6.6] plaintext y SASL(-13): x",
]


@pytest.fixture(scope="module")
def ruleset() -> Ruleset:
    return load_ruleset([REPO / "rules"])


_PARSERS: dict[int, list[Parser]] = {}


def events_of(ruleset: Ruleset, line: bytes) -> list[Event]:
    """Events of all paths for one line (the fast chunk path with each matcher, and the slow
    reference)."""
    parsers = _PARSERS.get(id(ruleset))
    if parsers is None:
        parsers = _PARSERS.setdefault(id(ruleset), [Parser(ruleset, clock=lambda: NOW, matcher=m)
                                                     for m in MATCHERS])
    events = [event for parser in parsers for event in parser.parse(line + b"\n")]
    slow = parsers[0].parse_line(line)
    return events + ([slow] if slow is not None else [])


def check(ruleset: Ruleset, template: str, may_succeed: bool, payload: str) -> None:
    line = template.replace("{P}", payload).encode("utf-8", "surrogateescape")
    for event in events_of(ruleset, line):
        assert event.ip not in FAKE_FORMS, f"INJECTED {event.ip} via {event.rule}: {line[:300]!r}"
        assert event.ip == REAL, f"wrong ip {event.ip} via {event.rule}: {line[:300]!r}"
        if not may_succeed:
            assert event.kind not in SUCCESS_KINDS, f"forged {event.kind} via {event.rule}"


def test_templates_match_benign(ruleset: Ruleset) -> None:
    """With a harmless payload each template yields an event (but the few listed), so the other
    tests test something."""
    missing = [t[:110] for t, _ in TEMPLATES if not any(m in t for m in NO_EVENT_TEMPLATES)
               and not events_of(ruleset, t.replace("{P}", "alice").encode())]
    assert not missing, "templates without an event:\n" + "\n".join(missing)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_payloads(ruleset: Ruleset, payload: str) -> None:
    for template, may_succeed in TEMPLATES:
        check(ruleset, template, may_succeed, payload)


def test_payload_combinations(ruleset: Ruleset) -> None:
    """Two hostile payloads chained, as an attacker controlling several fields would do."""
    for first in PAYLOADS[::2]:
        for second in PAYLOADS[1::2]:
            for template, may_succeed in TEMPLATES:
                check(ruleset, template, may_succeed, first + second)


def test_long_lines(ruleset: Ruleset) -> None:
    """Payloads repeated to tens of kilobytes still give only the real client."""
    for payload in PAYLOADS[::4]:
        big = (payload + " ") * (40_000 // len(payload))
        for template, may_succeed in TEMPLATES[::3]:
            check(ruleset, template, may_succeed, big)


@pytest.mark.parametrize("junk", [b"\xff\xfe\xfd", b"\x00", b"a\x00[6.6.6.6]", b"\xc3(", b"\xed\xa0\x80",
                                  b"\r", b"\x1b[31m"])
def test_invalid_utf8_and_nul(ruleset: Ruleset, junk: bytes) -> None:
    for template, may_succeed in TEMPLATES:
        head, _, tail = template.partition("{P}")
        line = head.encode() + b"u" + junk + b"x" + tail.replace("{P}", "y").encode()
        for event in events_of(ruleset, line):
            assert event.ip == REAL, f"{event.ip} via {event.rule}: {line[:200]!r}"
            if not may_succeed:
                assert event.kind not in SUCCESS_KINDS


def test_spoofed_second_message_in_a_chunk(ruleset: Ruleset) -> None:
    """A newline-free fake second message inside one line never yields the fake's event."""
    fake = ("Nov 21 10:00:00 host postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[6.6.6.6]: 550 5.1.1 "
            "<a@b>: Recipient address rejected: User unknown in local recipient table;")
    line = ("Nov 21 10:00:01 mx postfix/smtpd[2]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 550 "
            f"5.1.1 <x>: Recipient address rejected: User unknown; {fake} from=<{fake}> to=<x>")
    chunk = (line + "\n" + fake.replace("6.6.6.6", "192.0.2.78") + "\n").encode()
    events = Parser(load_ruleset([REPO / "rules"]), clock=lambda: NOW).parse(chunk)
    assert [(e.ip, e.line) for e in events] == [(REAL, 1), ("192.0.2.78", 2)]


@pytest.mark.parametrize("bad", ["999.1.1.1", "1.2.3", "::ffff:999.1.1.1", "fe80::1%eth0", "1.2.3.4.5",
                                 "12345::1::2"])
def test_invalid_ip_gives_no_event(ruleset: Ruleset, bad: str) -> None:
    lines = [
        f"Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[{bad}]: 550 5.1.1 "
        "<a@b>: Recipient address rejected: User unknown in local recipient table; to=<a@b>",
        f"Nov 21 10:00:00 mx dovecot: imap-login: Login: user=<a>, method=PLAIN, rip={bad}, "
        "lip=192.0.2.1, mpid=1, TLS, session=<s>",
        f"Nov 21 10:00:00 mx imapd: LOGIN FAILED, user=a, ip=[{bad}]",
    ]
    for line in lines:
        assert events_of(ruleset, line.encode()) == [], line


_TOKENS = st.sampled_from([
    "[", "]", "<", ">", "(", ")", ",", " ", ":", "=", '"', "'", "@", ";", "6.6.6.6", "192.0.2.77",
    "rip=", "lip=", "relay=", "user=", "ip=", "host=", "H=", "from ", "unknown", "reject=",
    "... ", "Relaying denied", "User unknown", "Password mismatch", "session=", "status=\"ok\"",
    " - ", "::ffff:", "sasl_username=", "(may be forged)", "\\", "\t",
    # Exim and vpopmail structure
    ") [", ") [6.6.6.6]", ":1", " I=[1.1.1.1]:25", " F=<", " rejected RCPT <", ": relay not permitted",
    ": Unknown user", " P=esmtpa A=plain:x", ": 535 Incorrect authentication data", " (set_id=",
    '" H=', " next input=\"", " dropped: too many ", " D=1s", "2001:db8:6666:", ":0:0:", " rhost=",
    "  user=", "SASL(",
])
_HOSTILE_TEXT = st.one_of(
    st.lists(_TOKENS, max_size=24).map("".join),
    st.text(max_size=60),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_HOSTILE_TEXT, template_index=st.integers(0, len(TEMPLATES) - 1))
def test_generated_payloads_never_move_the_ip(payload: str, template_index: int) -> None:
    ruleset = _cached_ruleset()
    template, may_succeed = TEMPLATES[template_index]
    check(ruleset, template, may_succeed, payload.replace("\n", " "))


_RULESET: list[Ruleset] = []


def _cached_ruleset() -> Ruleset:
    if not _RULESET:
        _RULESET.append(load_ruleset([REPO / "rules"]))
    return _RULESET[0]


# Point 6 of issue 12: the client chooses its user name, so a failure must count whatever the
# name holds (blanks, '>', brackets, the next field's shape...). {P} is the name.
COUNT_TEMPLATES: list[tuple[str, str]] = [
    ("Nov 21 10:00:00 mx cyrus/imap[1]: badlogin: scan.example [192.0.2.77] plaintext {P} "
     "SASL(-13): authentication failure: checkpass failed", "login-failed"),
    ("Nov 21 10:00:00 mx cyrus/pop3s[1]: badlogin: [192.0.2.77] plaintext {P} [SASL(-13): user not "
     "found: Password verification failed]", "login-failed"),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 550 5.1.1 "
     "<{P}@example.org>: Recipient address rejected: User unknown in local recipient table; "
     "from=<a@b> to=<{P}@example.org> proto=ESMTP helo=<x>", "user-unknown"),
    ("Nov 21 10:00:00 mx postfix/submission/smtpd[1]: NOQUEUE: reject: RCPT from x.example"
     "[192.0.2.77]:4711: 550 5.1.1 <\"{P}\"@example.org>: Recipient address rejected: undeliverable "
     "address: verification failed; from=<a@b> to=<\"{P}\"@example.org> proto=ESMTP helo=<x>",
     "user-unknown"),
    ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.77]: 554 5.7.1 "
     "<{P}@elsewhere.example>: Relay access denied; from=<a@b> to=<{P}@elsewhere.example> "
     "proto=ESMTP helo=<x>", "relay-denied"),
    ("Nov 21 10:00:00 mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 "
     "euid=0 tty=dovecot ruser={P} rhost=192.0.2.77  user={P}", "login-failed"),
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-pop3: vpopmail user not found {P}@{P}:192.0.2.77",
     "login-failed"),
    ("Nov 21 10:00:00 mx vpopmail[1]: vchkpw-submission: password fail (pass: '{P}') "
     "{P}@example.org:192.0.2.77", "auth-failed"),
    ("Nov 21 10:00:00 mx exim[1]: dovecot_login authenticator failed for (User) [192.0.2.77]:1 "
     "I=[192.0.2.4]:587: 535 Incorrect authentication data (set_id={P})", "auth-failed"),
    ("Nov 21 10:00:00 mx dovecot: auth: passwd-file({P},192.0.2.77,<sessABC>): unknown user",
     "login-failed"),
]
NAMES = ["john smith", "a>b", "a b>c", "x [6.6.6.6]", "x) [6.6.6.6]", "a) (b", "x SASL(-13): y",
         "a  b", "a\tb", "\u00fcn\u00efcode", "a'b", "x rhost=6.6.6.6", "x rhost=6.6.6.6  user=x",
         "x@y:6.6.6.6", "x>: Recipient address rejected: y", "[", "]", "(", ")", "", " lead",
         "trail ", "<x>", "a,b", "a\\b"]
# Shapes a rule refuses on purpose, each for a reason its rule file gives: Dovecot's auth process
# writes "driver(USER,IP...)" with no room for ',' or parentheses in USER.
REFUSED = {("passwd-file(", c) for c in ",()"}


@pytest.mark.parametrize("template,kind", COUNT_TEMPLATES, ids=[t[30:60] for t, _ in COUNT_TEMPLATES])
def test_failures_count_whatever_the_user_name(ruleset: Ruleset, template: str, kind: str) -> None:
    for name in NAMES:
        if any(m in template and c in name for m, c in REFUSED):
            continue
        line = template.replace("{P}", name).encode()
        events = events_of(ruleset, line)
        assert len(events) == len(MATCHERS) + 1, f"no event for name {name!r}: {line!r}"
        assert {(e.kind, e.ip) for e in events} == {(kind, REAL)}, (name, events[0])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(_HOSTILE_TEXT, min_size=6, max_size=6),
       template_index=st.integers(0, len(TEMPLATES) - 1))
def test_generated_payloads_per_field(payloads: list[str], template_index: int) -> None:
    """Each client-written field of a line gets its own payload (a HELO and a set_id, a command
    and the next input...), as a client writing several fields would do."""
    template, may_succeed = TEMPLATES[template_index]
    parts = template.split("{P}")
    line = parts[0] + "".join(payloads[i % 6].replace("\n", " ") + rest
                              for i, rest in enumerate(parts[1:]))
    ruleset = _cached_ruleset()
    for event in events_of(ruleset, line.encode("utf-8", "surrogateescape")):
        assert event.ip == REAL, f"wrong ip {event.ip} via {event.rule}: {line[:300]!r}"
        if not may_succeed:
            assert event.kind not in SUCCESS_KINDS, f"forged {event.kind} via {event.rule}"
