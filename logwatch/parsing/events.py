"""Events: what the parser makes of a log line, and the IP normalisation they rely on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

LOGIN = "login"
LOGIN_FAILED = "login-failed"
AUTH = "auth"
AUTH_FAILED = "auth-failed"
USER_UNKNOWN = "user-unknown"
RELAY_DENIED = "relay-denied"
REJECTED = "rejected"
STUCK_SESSION = "stuck-session"
S25R = "s25r"             # the policy service's S25R rules in `score` mode (no log rule emits it)

KINDS: tuple[str, ...] = (
    LOGIN, LOGIN_FAILED, AUTH, AUTH_FAILED, USER_UNKNOWN, RELAY_DENIED, REJECTED, STUCK_SESSION,
    S25R,
)
SUCCESS_KINDS = frozenset({LOGIN, AUTH})
FAILURE_KINDS = frozenset(KINDS) - SUCCESS_KINDS

# Message rules (rules/postfix-messages.yaml): their lines feed the accounting's correlation
# (logwatch/parsing/messageparse.py), never the engine. "message-start" begins a message (a
# queue id seen again there is a new message), "message" merges its fields into the
# message of its queue id, "delivery" adds one recipient's status, "message-done" is the
# message leaving the queue, "message-expired" the queue returning it, "message-reject" a
# rejected attempt (NOQUEUE, or a queued message's recipient/milter rejection).
MESSAGE_KINDS: tuple[str, ...] = (
    "message-start", "message", "delivery", "message-done", "message-expired", "message-reject",
)
# The named groups a message rule may have (all optional but qid, which all but rejects need).
MESSAGE_FIELDS: tuple[str, ...] = (
    "qid", "ip", "name", "user", "method", "msgid", "sender", "size", "nrcpt", "rcpt",
    "orig_to", "relay", "dsn", "status", "reason", "helo", "cmd",
)

# The services an event can name (a rule's service, its service_map's values).
SERVICES: tuple[str, ...] = ("pop3", "imap", "smtp", "submission", "sieve")
# What relay.services accepts: also "managesieve", the name a rule's service group captures
# from Dovecot when the rule has no service_map to "sieve" (accepted since the first version).
RELAY_SERVICES: tuple[str, ...] = (*SERVICES, "managesieve")


@dataclass(frozen=True)
class Event:
    """One thing a mail daemon logged about a client."""

    time: datetime
    kind: str
    ip: str
    user: str | None
    service: str | None
    program: str
    rule: str
    host: str | None
    line: int = 0

    def as_json(self) -> dict:
        """The stable `logwatchctl parse --json` shape."""
        return {
            "time": self.time.isoformat(),
            "kind": self.kind,
            "ip": self.ip,
            "user": self.user,
            "service": self.service,
            "program": self.program,
            "rule": self.rule,
            "host": self.host,
            "line": self.line,
        }


# text -> its normalize_ip() result (None: invalid); the parser's hot path reads it directly.
IP_CACHE: dict[str, str | None] = {}
_IP_CACHE_MAX = 65536


def normalize_ip(text: str) -> str | None:
    """Canonical text of an IP address (IPv4-mapped IPv6 -> IPv4, IPv6 compressed); None if invalid."""
    cached = IP_CACHE.get(text)
    if cached is not None or text in IP_CACHE:
        return cached
    try:
        # A scope id (fe80::1%eth0) is no client address we can ban or grant.
        addr = None if "%" in text else ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is None:
        result = None
    else:
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        result = str(addr)
    if len(IP_CACHE) >= _IP_CACHE_MAX:
        IP_CACHE.clear()
    IP_CACHE[text] = result
    return result
