"""Issue 12, end to end through the real parser and engine: what forged lines make us DO.

Each case feeds real-format log lines (the issue's attack shapes) to Parser, hands the events
to Engine and looks at the effects: no ban or grant may ever name the address the client wrote,
and the real client must be banned where the lines are its failures.
"""

from __future__ import annotations

from pathlib import Path

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.core import Engine
from logwatch.engine.model import BanAdded, GrantAdded
from logwatch.parsing.parser import Parser
from logwatch.parsing.rules import load_ruleset

REPO = Path(__file__).resolve().parents[1]
NOW = 1795305600.0 - 14 * 3600 + 60   # Nov 21 10:01 UTC: the lines below are a minute old
RULESET = load_ruleset([REPO / "rules"])


def effects_of(lines: list[str], *, weights: dict[str, float] | None = None,
               smtp_auth: bool = False) -> tuple[set[str], set[str]]:
    """(banned nets, granted IPs) after the lines, with the daemon's defaults otherwise."""
    bans = BanConfig(whitelist=None)
    if weights:
        bans.weights = {**bans.weights, **weights}
    engine = Engine(RelayConfig(smtp_auth=smtp_auth), bans, clock=lambda: NOW)
    chunk = "".join(line + "\n" for line in lines).encode()
    banned: set[str] = set()
    granted: set[str] = set()
    for event in Parser(RULESET, clock=lambda: NOW).parse(chunk):
        for effect in engine.handle(event):
            if isinstance(effect, BanAdded):
                banned.add(effect.ban.net)
            elif isinstance(effect, GrantAdded):
                granted.add(effect.grant.ip)
    return banned, granted


SYNC = ("Nov 21 10:00:0{i} mx exim[1]: SMTP protocol synchronization error (next input sent too "
        "soon: pipelining was not advertised): rejected ")


def test_exim_sync_error_command_cannot_ban_another_ip() -> None:
    """Issue point 1: five lines whose command holds "H=[6.6.6.6]" with rejected weighing 1."""
    forged = [SYNC.format(i=i) + '"EHLO " H=[6.6.6.6]:1 I=[1.1.1.1]:25 next input="" '
              'H=scanner.example [203.0.113.50]:4242 I=[198.51.100.1]:25 next input="NOOP\\r\\n"'
              for i in range(5)]
    assert effects_of(forged, weights={"rejected": 1}) == (set(), set())
    honest = [SYNC.format(i=i) + '"EHLO x" H=scanner.example [203.0.113.50]:4242 '
              'I=[198.51.100.1]:25 next input="NOOP\\r\\n"' for i in range(5)]
    assert effects_of(honest, weights={"rejected": 1}) == ({"203.0.113.50/32"}, set())


def test_exim_junk_helo_cannot_get_relay_for_another_ip() -> None:
    """Issue point 2: a HELO "x) [192.0.2.200] P=esmtpa A=plain:x (y" with relay.smtp_auth."""
    line = ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= spam@x.example H=(x) [192.0.2.200] "
            "P=esmtpa A=plain:x (y) [203.0.113.51]:1 I=[198.51.100.1]:25 P=esmtp S=1 id=x@y")
    assert effects_of([line], smtp_auth=True) == (set(), set())
    real = ("Nov 21 10:00:00 mx exim[1]: 1vMcXy-000ABC-1x <= bob@example.org H=(laptop) "
            "[203.0.113.51]:1 I=[198.51.100.1]:587 P=esmtpsa A=plain:bob S=1 id=x@y")
    assert effects_of([real], smtp_auth=True) == (set(), {"203.0.113.51"})


def test_exim_forged_host_ends_ban_nobody_else() -> None:
    """Point 2 for the failure rules: a junk HELO or a quoted recipient holding a whole host end
    never bans that address; plain lines of the same client still do."""
    helo = [f"Nov 21 10:00:0{i} mx exim[1]: H=(x) [6.6.6.6] F=<a@b> rejected RCPT <b@c>: Unknown "
            f"user (y) [203.0.113.51]:1 I=[198.51.100.1]:25 F=<s@x> rejected RCPT <r{i}@y>: "
            "Unknown user" for i in range(5)]
    rcpt = [f"Nov 21 10:00:0{i} mx exim[1]: H=(x) [203.0.113.51] F=<s@x> rejected RCPT "
            f"<\"y{i}) [6.6.6.6] rejected RCPT <\"@d>: relay not permitted" for i in range(5)]
    assert effects_of(helo + rcpt) == (set(), set())
    plain = [f"Nov 21 10:00:0{i} mx exim[1]: H=(x) [203.0.113.51]:1 I=[198.51.100.1]:25 F=<s@x> "
             f"rejected RCPT <\"r{i} (y) [6.6.6.6]\"@example.org>: Unknown user" for i in range(5)]
    assert effects_of(plain) == ({"203.0.113.51/32"}, set())


def test_vpopmail_domain_cannot_choose_an_ipv6_net() -> None:
    """Issue point 3: "alice@y:2001:db8:bad:1:0:0:192.0.2.77" is 192.0.2.77, not 2001:db8:bad:1::/64."""
    lines = [f"Nov 21 10:00:0{i} mx vpopmail[1]: vchkpw-pop3: vpopmail user not found "
             "alice@y:2001:db8:bad:1:0:0:192.0.2.77" for i in range(5)]
    assert effects_of(lines) == ({"192.0.2.77/32"}, set())


def test_user_names_with_blanks_still_ban() -> None:
    """Issue point 6: Cyrus, Postfix recipients and pam_unix failures count whatever the name."""
    cyrus = [f"Nov 21 10:00:0{i} mx cyrus/imap[1]: badlogin: scan.example [192.0.2.61] plaintext "
             f"john smith{i} SASL(-13): authentication failure: checkpass failed" for i in range(5)]
    postfix = [f"Nov 21 10:00:0{i} mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown"
               f"[192.0.2.62]: 550 5.1.1 <\"a b>{i}\"@example.org>: Recipient address rejected: User "
               f"unknown in local recipient table; from=<a@b> to=<\"a b>{i}\"@example.org> "
               "proto=ESMTP helo=<x>" for i in range(5)]
    pam = [f"Nov 21 10:00:0{i} mx auth: pam_unix(dovecot:auth): authentication failure; logname= "
           f"uid=0 euid=0 tty=dovecot ruser=john smith rhost=192.0.2.63  user=john smith"
           for i in range(5)]
    for lines, net in ((cyrus, "192.0.2.61/32"), (postfix, "192.0.2.62/32"), (pam, "192.0.2.63/32")):
        assert effects_of(lines) == ({net}, set()), lines[0]
