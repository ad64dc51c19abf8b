"""The keys of account risk (engine/accounts.py): which SASL IDs may be table keys and their
keys, a client address's normal form and network; memoised, as they are asked per record."""

from __future__ import annotations

import functools
import ipaddress
import re

from logwatch.parsing.events import normalize_ip

MAX_USER_LENGTH = 256         # longer SASL IDs are refused (counted), never keys of the table


def valid_user(name: object) -> bool:
    """A SASL ID that may be a key of the check_sasl_access table: 1..256 printable ASCII
    characters, no white space, no comment mark. Anything else could forge another key."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_USER_LENGTH and name.isascii()
            and name.isprintable() and not any(c.isspace() for c in name)
            and not name.startswith("#"))


def user_key(name: str) -> str:
    """The table key of an ID: Postfix folds hash/lmdb lookup keys to lower case."""
    return name.lower()


# SASL ID -> its table key, "" when not valid_user(): the few IDs of a server, asked per record.
_KEYS: dict[str, str] = {}
_KEYS_MAX = 65536


def key_of(user: object) -> str:
    """user_key(user) when valid_user(user), else "" (memoised for strings)."""
    if type(user) is not str or len(user) > MAX_USER_LENGTH:
        # Not memoised: a long hostile name must not stay in memory (never a valid ID).
        return user_key(user) if valid_user(user) else ""      # type: ignore[arg-type]
    key = _KEYS.get(user)
    if key is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        key = _KEYS[user] = user_key(user) if valid_user(user) else ""
    return key


# A canonical dotted quad (what normalize_ip() gives for IPv4): its /24 is plain text.
_CANONICAL_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                           r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


@functools.lru_cache(maxsize=65536)
def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of a normalised address."""
    if _CANONICAL_V4.fullmatch(ip):
        return ip[:ip.rindex(".")] + ".0/24"
    prefix = 24 if ":" not in ip else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


# Client text -> (normalize_ip(), its network): a canonical dotted quad is its own normal form.
_IPS: dict[str, tuple[str, str] | None] = {}
_MAX_IP_TEXT = 64                     # longer than any address text (IPv6 with a scope id)


def _ip_and_net(raw: str) -> tuple[str, str] | None:
    """(normalize_ip(raw), network_of() of it), None for no address (memoised)."""
    if len(raw) > _MAX_IP_TEXT:           # no address: not memoised (nor kept in memory)
        ip = normalize_ip(raw)
        return (ip, network_of(ip)) if ip is not None else None
    found = _IPS.get(raw)
    if found is None and raw not in _IPS:
        if _CANONICAL_V4.fullmatch(raw):
            found = (raw, raw[:raw.rindex(".")] + ".0/24")      # network_of(), spelt out
        else:
            ip = normalize_ip(raw)
            found = (ip, network_of(ip)) if ip is not None else None
        if len(_IPS) >= _KEYS_MAX:
            _IPS.clear()
        _IPS[raw] = found
    return found
