"""Validation of manual targets (logwatchctl ban/grant): addresses that can never be a mail client.

A grant or ban of 0.0.0.0, 255.255.255.255, a multicast group or a whole /0 is always a
mistake: no SMTP client connects from such an address, and a /0 ban would cut the server off
the Internet. The engine's own checks (whitelist, mynetworks, nesting) come after these.
"""

from __future__ import annotations

import ipaddress

from logwatch.engine.whitelist import parse_net, range_text

# The widest manual ban: the same limits as bans.ipv4_prefix / bans.ipv6_prefix.
MIN_BAN_PREFIX = {4: 8, 6: 16}

_CLASS_E = ipaddress.ip_network("240.0.0.0/4")     # reserved, includes 255.255.255.255


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def not_a_client(text: str) -> str | None:
    """Why this address can never be a mail client's source address, or None if it can be."""
    addr = _address(text)
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.version == 4 and int(addr) == 0xFFFFFFFF:
        return "the broadcast address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.version == 4 and addr in _CLASS_E:
        return "a reserved address (240.0.0.0/4)"
    return None


def check_grant(text: str) -> str | None:
    """Error message for `logwatchctl grant TEXT`, or None: a unicast, non-loopback address."""
    try:
        addr = _address(text.strip())
    except ValueError:
        return None       # the engine names the bad input itself
    why = not_a_client(str(addr))
    if why is None and addr.is_loopback:
        why = "a loopback address (local clients relay through mynetworks)"
    return f"{addr} is {why}; never granted" if why else None


def check_ban(text: str) -> str | None:
    """Error message for `logwatchctl ban TEXT`, or None: a client address or a sane network."""
    text = text.strip()
    try:
        version, first, last = parse_net(text)
    except ValueError:
        return None       # the engine names the bad input itself
    if "/" not in text:
        why = not_a_client(text.strip("[]"))
        return f"{text} is {why}; not banned" if why else None
    net = range_text(version, first, last)
    prefix = int(net.rsplit("/", 1)[1])
    widest = MIN_BAN_PREFIX[version]
    if prefix < widest:
        return (f"{text} is {net}, wider than /{widest}: refusing to ban "
                f"{'the whole Internet' if prefix == 0 else 'that much of the Internet'}")
    given = text.rsplit("/", 1)
    try:
        stated = ipaddress.ip_address(given[0].strip("[]"))
    except ValueError:
        stated = None
    if stated is not None and stated.version == version and int(stated) != first:
        return f"{text} has host bits set: the network is {net}; ban that if you mean it"
    return None
