"""Syslog framing: every supported format, year inference, unknown lines."""

from datetime import UTC, datetime

import pytest

from logwatch.parsing.framing import Framer

# 2026-11-21 12:00:00 UTC
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def framer():
    return Framer(clock=lambda: NOW)


def test_rfc3164(framer):
    f = framer.frame("Nov 21 11:43:39 mx1 postfix/smtpd[1234]: connect from a[192.0.2.1]")
    assert (f.host, f.program, f.pid, f.message) == ("mx1", "postfix/smtpd", 1234, "connect from a[192.0.2.1]")
    assert f.time.tzinfo is not None
    assert (f.time.month, f.time.day, f.time.hour, f.time.minute, f.time.second) == (11, 21, 11, 43, 39)
    assert f.time.year == 2026


def test_single_digit_day_and_no_pid(framer):
    f = framer.frame("Nov  2 01:02:03 mx1 imapd: LOGIN, user=a, ip=[::ffff:192.0.2.1]")
    assert (f.program, f.pid, f.time.day) == ("imapd", None, 2)


def test_year_inferred_closest_to_now_never_a_day_ahead(framer):
    # Dec 24 is a month after "now" (Nov 21 2026): last year's, not a line from the future.
    assert framer.frame("Dec 24 10:00:00 h p[1]: x").time.year == 2025
    assert framer.frame("Nov 21 11:59:00 h p[1]: x").time.year == 2026
    assert framer.frame("Nov 22 10:00:00 h p[1]: x").time.year == 2026   # less than a day ahead
    assert framer.frame("Jan  1 00:00:00 h p[1]: x").time.year == 2026


def test_year_rollover_picks_next_year():
    """Issue 12 point 16: at Dec 31 23:59:30 a Jan  1 00:00:10 line is next year's, and the
    caches filled before the rollover do not keep it in the old year."""
    now = [datetime(2026, 12, 31, 23, 59, 30).timestamp()]      # local time, like syslog
    framer = Framer(clock=lambda: now[0])
    assert framer.frame_fast("Dec 31 23:59:29 h p[1]: x")[0].year == 2026
    assert framer.frame_fast("Jan  1 00:00:10 h p[1]: x")[0].year == 2027
    assert framer.frame("Jan  1 00:00:10 h p[1]: x").time.year == 2027
    now[0] += 3600                                              # after midnight
    assert framer.frame_fast("Dec 31 23:59:29 h p[1]: x")[0].year == 2026
    assert framer.frame_fast("Jan  1 00:00:11 h p[1]: x")[0].year == 2027


def test_cached_year_choice_follows_the_clock():
    """A stamp seen once, read again months later, is re-placed (caches live a day)."""
    now = [datetime(2026, 2, 1, 12, 0, 0).timestamp()]
    framer = Framer(clock=lambda: now[0])
    assert framer.frame_fast("Jan 20 10:00:00 h p[1]: x")[0].year == 2026
    now[0] = datetime(2026, 12, 30, 12, 0, 0).timestamp()
    assert framer.frame_fast("Jan 20 10:00:00 h p[1]: x")[0].year == 2026   # 11 months back
    now[0] = datetime(2027, 1, 19, 12, 0, 0).timestamp()
    assert framer.frame_fast("Jan 20 10:00:00 h p[1]: x")[0].year == 2027


def test_feb_29_falls_back_to_a_leap_year():
    framer = Framer(clock=lambda: datetime(2029, 3, 1, tzinfo=UTC).timestamp())
    assert framer.frame("Feb 29 10:00:00 h p[1]: x").time.year == 2028


def test_postlogd_fractional_seconds(framer):
    f = framer.frame("Nov 21 11:00:01.123456 mx1 postfix/smtpd[77]: disconnect from x[192.0.2.1]")
    assert f.time.microsecond == 123456 and f.program == "postfix/smtpd"


def test_rsyslog_iso8601(framer):
    f = framer.frame("2026-11-21T19:43:39.123456+01:00 mx1 dovecot[99]: imap-login: Login: user=<a>")
    assert f.time.utcoffset().total_seconds() == 3600
    assert (f.host, f.program, f.pid) == ("mx1", "dovecot", 99)
    assert f.message == "imap-login: Login: user=<a>"


def test_rfc5424(framer):
    f = framer.frame('<22>1 2026-11-21T10:00:00.5Z mx1 postfix/smtpd 4242 - [meta x="1"] hello world')
    assert (f.host, f.program, f.pid, f.message) == ("mx1", "postfix/smtpd", 4242, "hello world")
    assert f.time == datetime(2026, 11, 21, 10, 0, 0, 500000, tzinfo=UTC)
    g = framer.frame("<22>1 2026-11-21T10:00:00Z mx1 sendmail - - - msg text")
    assert (g.program, g.pid, g.message) == ("sendmail", None, "msg text")


def test_dovecot_own_log_is_normalised(framer):
    f = framer.frame("Nov 21 11:27:55 auth: Info: passwd-file(alice,192.0.2.13,<sess>): Password mismatch")
    assert (f.host, f.program) == (None, "dovecot")
    assert f.message == "auth: passwd-file(alice,192.0.2.13,<sess>): Password mismatch"
    g = framer.frame("Nov 21 11:27:53 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.11")
    assert g.program == "dovecot" and g.message.startswith("pop3-login: Login: user=<alice>")
    h = framer.frame("2013-08-11 03:56:40 auth-worker(default): Info: pam(u,1.2.3.4): unknown user")
    assert h.program == "dovecot" and h.message == "auth-worker(default): pam(u,1.2.3.4): unknown user"


def test_tai64n(framer):
    f = framer.frame("@400000004c91b044077a9e94 imap-login: Info: Aborted login (auth failed)")
    assert f.time.year == 2010
    assert f.program == "dovecot"
    g = framer.frame("@400000004c91b044077a9e94 dovecot-auth: pam_unix(dovecot:auth): authentication failure")
    assert g.program == "dovecot-auth" and g.host is None


@pytest.mark.parametrize("line", [
    "", "garbage", "Foo 21 10:00:00 h p: x", "Nov 21 25:00:00 h p[1]: x", "2026-13-45T00:00:00 h p: x",
    "Nov 21 10:00:00", "\x00\x00\x00", "Nov 21 10:00:00 host-without-tag",
])
def test_unknown_framing_is_none(framer, line):
    assert framer.frame(line) is None


def test_fast_path_equals_general_path(framer):
    lines = [
        "Nov 21 11:43:39 mx1 postfix/smtpd[1234]: connect from a[192.0.2.1]",
        "Nov 21 11:27:53 pop3-login: Info: Login: user=<alice>",
        "Nov  3 09:00:00 mx1 sm-mta[5]: x",
        "2026-11-21T19:43:39+01:00 mx1 dovecot[99]: imap-login: y",
    ]
    for line in lines:
        for _ in range(2):      # the second call hits the timestamp cache
            f = framer.frame(line)
            assert framer.frame_fast(line) == (f.time, f.host, f.program, f.message)


def test_ipv6_literal_as_syslog_host(framer):
    f = framer.frame("Nov 21 11:00:00 2001:db8::25 postfix/smtpd[9]: connect from x[192.0.2.1]")
    assert (f.host, f.program, f.pid) == ("2001:db8::25", "postfix/smtpd", 9)
    assert framer.frame_fast("Nov 21 11:00:00 2001:db8::25 postfix/smtpd[9]: hi")[1:3] == (
        "2001:db8::25", "postfix/smtpd")


def test_exim_mainlog(framer):
    f = framer.frame("2013-06-02 09:22:06 [1234] SMTP call from [192.0.2.109] dropped: too many syntax errors")
    assert (f.program, f.pid, f.host) == ("exim", 1234, None)
    assert f.message == "SMTP call from [192.0.2.109] dropped: too many syntax errors"
    g = framer.frame("2013-06-02 09:22:06 1VxPit-000MMd-U4 SA: Action: flagged as Spam")
    assert (g.program, g.host) == ("exim", None) and g.message.startswith("1VxPit-000MMd-U4 SA:")
    h = framer.frame("2013-01-04 17:03:46 login authenticator failed for (x) [192.0.2.3]: 535 Incorrect")
    assert h.program == "exim" and h.message.startswith("login authenticator failed")
    z = framer.frame("2024-03-21 19:26:06.123 +0100 [77] no host name found for IP address 192.0.2.8")
    assert z.program == "exim" and z.time.utcoffset().total_seconds() == 3600
    # Syslog lines with the same stamp still frame as syslog.
    s = framer.frame("2019-10-22 03:39:17 mx1.fqdn.local exim[29786]: dovecot_login authenticator failed")
    assert (s.host, s.program, s.pid) == ("mx1.fqdn.local", "exim", 29786)


def test_freebsd_syslogd_v_prefix(framer):
    f = framer.frame("Jun 17 14:37:39 <mail.notice> mx sm-mta[1]: x: ruleset=check_relay")
    assert (f.host, f.program) == ("mx", "sm-mta")


def test_minute_cache_keeps_the_future_limit_exact():
    """A minute already placed gives its seconds from a cached base; near now + 1 day every
    second is still judged on its own, whatever the order of the lines."""
    now = datetime(2026, 11, 21, 12, 0, 0).timestamp()          # local time, like syslog
    want = {"11:59:30": 2026, "11:59:59": 2026, "12:00:00": 2026, "12:00:01": 2025,
            "12:00:02": 2025, "11:59:58": 2026}
    for order in (list(want), list(want)[::-1], sorted(want)):
        framer = Framer(clock=lambda: now)
        for hms in order:
            line = f"Nov 22 {hms} h p[1]: x"
            when = framer.frame_fast(line)[0]
            assert when.year == want[hms], (order, hms)
            assert when == Framer(clock=lambda: now).frame(line).time
            assert framer.frame_fast(line)[0] == when           # and again from the caches


def test_rfc5424_escaped_structured_data(framer):
    f = framer.frame('<22>1 2026-11-21T10:00:00Z mx1 app 7 ID1 [a b="x\\]y\\"z\\\\" c=""][t@32473 q="1"] '
                     'msg')
    assert (f.program, f.message) == ("app", "msg")


# Issue 12.4: an unescaped "]" inside a PARAM-VALUE ended the SD early and the rest of the value
# became the message: a relay-denied event for 6.6.6.6.
FORGED_SD = ('<22>1 2026-11-21T10:00:00Z mx1 postfix/smtpd 4242 - [meta v="a] NOQUEUE: reject: '
             'RCPT from x[6.6.6.6]: 554 5.7.1 <u@example.org>: Relay access denied"] lost connection')


@pytest.mark.parametrize("line", [
    FORGED_SD,
    '<22>1 2026-11-21T10:00:00Z mx1 app 7 - [meta v="a"b"] msg',       # unescaped quote
    '<22>1 2026-11-21T10:00:00Z mx1 app 7 - [meta v=unquoted] msg',
    '<22>1 2026-11-21T10:00:00Z mx1 app 7 - [meta v="open] msg',
    '<22>1 2026-11-21T10:00:00Z mx1 app 7 - [] msg',
])
def test_rfc5424_malformed_structured_data_is_no_frame(framer, line):
    assert framer.frame(line) is None


def test_rfc5424_forged_sd_gives_no_event():
    from logwatch.parsing.parser import Parser
    from logwatch.parsing.rules import default_rules_dirs, load_ruleset

    parser = Parser(load_ruleset(default_rules_dirs()), clock=lambda: NOW)
    assert parser.parse(FORGED_SD.encode() + b"\n") == []
    assert parser.parse_line(FORGED_SD.encode()) is None
    assert parser.stats.unknown_framing == 2


def test_old_dates_are_cached_and_stay_right():
    """A log months old (a catch-up) is placed from the stamp caches, not afresh per line; the
    cached year stays the right one until the caches are dropped, a day later at most."""
    now = [datetime(2026, 12, 7, 21, 0, 0).timestamp()]
    framer = Framer(clock=lambda: now[0])
    for stamp, year in (("Nov  1 04:19:15", 2026), ("Feb  3 10:00:00", 2026),
                        ("Dec  8 20:59:59", 2026), ("Dec  9 10:00:00", 2025)):
        line = f"{stamp} h p[1]: x"
        assert framer.frame_fast(line)[0].year == year
        assert (stamp in framer.stamp_cache) == (year == 2026), stamp
        now[0] += 23 * 3600                   # still inside the caches' life
        assert framer.frame_fast(line)[0] == Framer(clock=lambda: now[0]).frame(line).time
        now[0] -= 23 * 3600
