"""Deterministic generator of a realistic mail log (Postfix + Dovecot + a little Sendmail/Courier)."""

from __future__ import annotations

import datetime
import random


def _ip(rng: random.Random, v6_share: float) -> str:
    if rng.random() < v6_share:
        return f"2001:db8:{rng.randrange(1, 0xFFFF):x}:{rng.randrange(0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
    return (f"{rng.choice((198, 203, 192, 185, 45, 91))}.{rng.randrange(256)}."
            f"{rng.randrange(256)}.{rng.randrange(1, 255)}")


def _qid(rng: random.Random) -> str:
    return f"{rng.randrange(16 ** 10):010X}"


def _sess(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(rng.choice(alphabet) for _ in range(16))


USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
GUESSES = ["admin", "info", "sales", "test", "webmaster", "support", "office", "contact",
           "postmaster1", "billing", "hr", "jobs", "marketing", "root2", "user"]


def ordinary(rng: random.Random, host: str, ip: str) -> str:
    """A line that must match no rule (connections, deliveries, logouts, cron...)."""
    pid = rng.randrange(1000, 60000)
    qid = _qid(rng)
    name = f"mx{rng.randrange(100)}.example.net"
    pick = rng.randrange(14)
    if pick == 0:
        return f"{host} postfix/smtpd[{pid}]: connect from {name}[{ip}]"
    if pick == 1:
        return f"{host} postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    if pick == 2:
        return f"{host} postfix/smtpd[{pid}]: {qid}: client={name}[{ip}]"
    if pick == 3:
        return f"{host} postfix/cleanup[{pid}]: {qid}: message-id=<{_sess(rng)}@{name}>"
    if pick == 4:
        return f"{host} postfix/qmgr[{pid}]: {qid}: from=<news@{name}>, size={rng.randrange(900, 90000)}, nrcpt=1 (queue active)"
    if pick == 5:
        return (f"{host} postfix/local[{pid}]: {qid}: to=<{rng.choice(USERS)}@example.org>, relay=local, "
                f"delay=0.{rng.randrange(99)}, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)")
    if pick == 6:
        return f"{host} postfix/qmgr[{pid}]: {qid}: removed"
    if pick == 7:
        return (f"{host} dovecot: imap({rng.choice(USERS)})<{pid}><{_sess(rng)}>: Logged out "
                f"in={rng.randrange(9000)} out={rng.randrange(90000)} deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0")
    if pick == 8:
        return (f"{host} dovecot: lmtp({rng.choice(USERS)})<{pid}><{_sess(rng)}>: msgid=<{_sess(rng)}@{name}>: "
                "saved mail to INBOX")
    if pick == 9:
        return f"{host} postfix/anvil[{pid}]: statistics: max connection rate 1/60s for (smtp:{ip}) at Nov 21 10:00:00"
    if pick == 10:
        return f"{host} CRON[{pid}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)"
    if pick == 11:
        return (f"{host} postfix/smtp[{pid}]: {qid}: to=<list@{name}>, relay={name}[{ip}]:25, delay=1.2, "
                "delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)")
    if pick == 12:
        return f"{host} dovecot: pop3({rng.choice(USERS)})<{pid}><{_sess(rng)}>: Disconnected: Logged out top=0/0, retr=1/2048, del=1/1, size=2048"
    return f"{host} postfix/postscreen[{pid}]: CONNECT from [{ip}]:{rng.randrange(1024, 65535)} to [192.0.2.25]:25"


def interesting(rng: random.Random, host: str, ip: str) -> str:
    """A login or an attack line, of the kinds the rules catch."""
    pid = rng.randrange(1000, 60000)
    name = rng.choice(("unknown", f"host{rng.randrange(999)}.example.com"))
    pick = rng.randrange(9)
    if pick == 0:
        return (f"{host} postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 550 5.1.1 "
                f"<{rng.choice(GUESSES)}@example.org>: Recipient address rejected: User unknown in local "
                f"recipient table; from=<x@example.com> to=<{rng.choice(GUESSES)}@example.org> proto=ESMTP helo=<{name}>")
    if pick == 1:
        return f"{host} postfix/smtpd[{pid}]: warning: {name}[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
    if pick == 2:
        return (f"{host} postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 554 5.7.1 "
                "<victim@example.com>: Relay access denied; from=<spam@example.net> to=<victim@example.com> "
                f"proto=ESMTP helo=<{name}>")
    if pick in (3, 4):
        svc = rng.choice(("imap", "pop3"))
        return (f"{host} dovecot: {svc}-login: Login: user=<{rng.choice(USERS)}>, method=PLAIN, rip={ip}, "
                f"lip=192.0.2.25, mpid={pid}, TLS, session=<{_sess(rng)}>")
    if pick == 5:
        return (f"{host} dovecot: auth: passwd-file({rng.choice(GUESSES)},{ip},<{_sess(rng)}>): "
                "unknown user")
    if pick == 6:
        return (f"{host} dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): "
                f"user=<{rng.choice(GUESSES)}>, method=PLAIN, rip={ip}, lip=192.0.2.25, TLS, session=<{_sess(rng)}>")
    if pick == 7:
        return (f"{host} postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 554 5.7.1 "
                f"Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; from=<a@b.example> "
                f"to=<{rng.choice(USERS)}@example.org> proto=ESMTP helo=<{name}>")
    rcpt = f"{rng.choice(GUESSES)}@example.org"
    return (f"{host} sm-mta[{pid}]: {_qid(rng)[:8]}: ruleset=check_rcpt, arg1=<{rcpt}>, "
            f"relay={name} [{ip}], reject=550 5.1.1 <{rcpt}>... User unknown")


def ending_now(lines: int) -> datetime.datetime:
    """A start that makes a log of `lines` lines end about now (one second per ~20 lines):
    its failures then still count on catch-up. A fixed date ages, and the daemon rightly
    skips failures older than every ban window."""
    now = datetime.datetime.now().replace(microsecond=0)
    return now - datetime.timedelta(seconds=lines // 20 + 60)


def generate(lines: int, seed: int = 1, attack_share: float = 0.10, v6_share: float = 0.04,
             start: datetime.datetime | None = None) -> bytes:
    """`lines` lines of mail log from `start` (default: ending about now), the same for the
    same seed and start."""
    rng = random.Random(seed)
    out = []
    second = 0
    attackers = [_ip(rng, v6_share) for _ in range(2000)]
    base = start or ending_now(lines)
    stamps: dict[int, str] = {}
    for _ in range(lines):
        if rng.random() < 0.05:
            second += 1
        stamp = stamps.get(second)
        if stamp is None:
            at = base + datetime.timedelta(seconds=second)
            stamp = stamps[second] = f"{at:%b} {at.day:2d} {at:%H:%M:%S} mail"
        if rng.random() < attack_share:
            out.append(interesting(rng, stamp, rng.choice(attackers)))
        else:
            out.append(ordinary(rng, stamp, _ip(rng, v6_share)))
    return ("\n".join(out) + "\n").encode()
