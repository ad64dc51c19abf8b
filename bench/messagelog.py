"""Deterministic synthetic Postfix log of whole messages (for the accounting bench and tests).

Each message is smtpd's connect and client= (a third with a SASL login), cleanup's message-id,
qmgr's from=, one delivery line per recipient (1 to 3), qmgr's removed and smtpd's disconnect;
up to `window` messages are in flight at once, so their lines interleave as on a busy server.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def _qid(n: int) -> str:
    # Postfix's long queue ids (enable_long_queue_ids): unique, never reused.
    alphabet = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
    out = []
    n += 52 ** 9
    while n:
        n, d = divmod(n, len(alphabet))
        out.append(alphabet[d])
    return "4" + "".join(reversed(out))


def message_lines(n: int, rng: random.Random, stamp: str, host: str,
                  complete: bool = True) -> list[str]:
    """The lines of message n (without "removed" and deliveries when not complete)."""
    qid = _qid(n)
    ip = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    name = f"client{rng.randrange(999)}.example.net"
    pid = rng.randrange(1000, 60000)
    sasl = ""
    if n % 3 == 0:
        sasl = f", sasl_method=PLAIN, sasl_username={USERS[n % len(USERS)]}"
    rcpts = [f"user{rng.randrange(5000)}@dest{rng.randrange(50)}.example.com"
             for _ in range(1 + n % 3)]
    p = f"{stamp} {host} postfix"
    lines = [
        f"{p}/smtpd[{pid}]: connect from {name}[{ip}]",
        f"{p}/smtpd[{pid}]: {qid}: client={name}[{ip}]{sasl}",
        f"{p}/cleanup[{pid + 1}]: {qid}: message-id=<{n}.{rng.randrange(10**9)}@{name}>",
        f"{p}/qmgr[900]: {qid}: from=<sender{n % 977}@example.org>, size={rng.randrange(900, 90000)}, "
        f"nrcpt={len(rcpts)} (queue active)",
    ]
    if not complete:
        return lines
    for rcpt in rcpts:
        lines.append(f"{p}/smtp[{pid + 2}]: {qid}: to=<{rcpt}>, relay=mx.example.com[203.0.113.5]:25, "
                     f"delay=0.{rng.randrange(99)}, delays=0.1/0/0.1/0.2, dsn=2.0.0, "
                     "status=sent (250 2.0.0 Ok: queued as 4F00D1)")
    lines.append(f"{p}/qmgr[900]: {qid}: removed")
    lines.append(f"{p}/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")
    return lines


def generate_lines(messages: int, seed: int = 1, window: int = 20, host: str = "mx1",
                   complete: bool = True, first: int = 0) -> Iterator[str]:
    """The lines of `messages` messages, interleaved `window` at a time."""
    rng = random.Random(seed)
    in_flight: list[list[str]] = []
    n = first
    second = 0
    while n < first + messages or in_flight:
        while len(in_flight) < window and n < first + messages:
            stamp = f"Nov 21 {10 + second // 3600 % 12:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
            in_flight.append(message_lines(n, rng, stamp, host, complete))
            n += 1
            if n % 50 == 0:
                second += 1
        i = rng.randrange(len(in_flight))
        yield in_flight[i].pop(0)
        if not in_flight[i]:
            in_flight.pop(i)


def generate(messages: int, seed: int = 1, **kwargs: object) -> bytes:
    return "".join(line + "\n" for line in generate_lines(messages, seed, **kwargs)).encode()  # type: ignore[arg-type]
