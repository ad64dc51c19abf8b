"""Whitelist of addresses and networks that are never banned, plus a fast range set (NetSet).

File format (blocksmtp-compatible): one address or CIDR per line, `#` starts a comment (whole
line or trailing), blank lines are ignored. A bad line is reported with file and line number
and skipped; the rest of the file still applies. Loopback (127.0.0.0/8, ::1) is always included.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from bisect import bisect_right
from collections.abc import Iterable

from logwatch.util.safeio import WHITELIST_MAX_BYTES, read_capped

log = logging.getLogger("logwatchd.whitelist")

LOOPBACK = ("127.0.0.0/8", "::1/128")

_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def parse_net(text: str) -> tuple[int, int, int]:
    """(version, first, last) of an address or CIDR; IPv4-mapped IPv6 becomes IPv4; ValueError if bad."""
    text = text.strip()
    if "%" in text:
        raise ValueError(f"{text!r}: scoped addresses are not accepted")
    # Postfix writes IPv6 networks as [2001:db8::]/64; accept that spelling too.
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: unbalanced [")
        text = text[1:close] + text[close + 1:]
    try:
        if "/" not in text:
            # Bare addresses are the common case (every event); ip_address is much cheaper.
            addr = ipaddress.ip_address(text)
            if addr.version == 6 and addr.ipv4_mapped is not None:
                return 4, int(addr.ipv4_mapped), int(addr.ipv4_mapped)
            return addr.version, int(addr), int(addr)
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r}: not an IP address or network ({exc})") from None
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(_V4_MAPPED):
        first = int(net.network_address) & 0xFFFFFFFF
        prefix = net.prefixlen - 96
        net4 = ipaddress.IPv4Network((first, prefix))
        return 4, int(net4.network_address), int(net4.broadcast_address)
    return net.version, int(net.network_address), int(net.broadcast_address)


def net_text(version: int, first: int, prefix: int) -> str:
    """Canonical CIDR text (IPv6 compressed), e.g. "192.0.2.7/32", "2001:db8:1:2::/64"."""
    addr = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
    return f"{addr}/{prefix}"


def range_text(version: int, first: int, last: int) -> str:
    bits = 32 if version == 4 else 128
    return net_text(version, first, bits - (last - first).bit_length())


def normalize_net(text: str) -> str:
    """Canonical CIDR text of an address (as /32 or /128) or a network; ValueError if invalid."""
    return range_text(*parse_net(text))


_PREFIX_RE = re.compile(r"[0-9]{1,3}")


def parse_entry(entry: str) -> tuple[str, bool]:
    """(canonical CIDR, host bits were set) of one whitelist entry; ValueError if not strictly
    an address, address/prefix or address/netmask (no "10/8", "1.2.3" or hostmask shorthands)."""
    if entry.startswith("[") and "]" in entry:
        entry = entry[1:entry.index("]")] + entry[entry.index("]") + 1:]
    addr_text, slash, mask = entry.partition("/")
    try:
        addr = ipaddress.ip_address(addr_text)     # strict: four decimal octets, no zero padding
    except ValueError:
        raise ValueError(f"{addr_text!r} is not a complete IP address") from None
    if slash and not _PREFIX_RE.fullmatch(mask):
        if addr.version != 4 or ipaddress.IPv4Network(f"0.0.0.0/{mask}").netmask != \
                _netmask_or_none(mask):
            raise ValueError(f"{mask!r} is neither a prefix length nor a netmask")
    try:
        net = ipaddress.ip_network(entry, strict=False)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    version, first, last = parse_net(str(net))
    return range_text(version, first, last), int(net.network_address) != int(addr)


def _netmask_or_none(mask: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(mask)
    except ValueError:
        return None


class NetSet:
    """Immutable set of IPv4/IPv6 networks as merged integer ranges, queried with bisect."""

    __slots__ = ("_starts", "_ends", "_cidrs")

    def __init__(self, nets: Iterable[str] = ()) -> None:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        cidrs: list[str] = []
        for text in nets:
            version, first, last = parse_net(text)
            ranges[version].append((first, last))
            cidrs.append(range_text(version, first, last))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in ranges.items():
            items.sort()
            merged: list[list[int]] = []
            for first, last in items:
                # Adjacent ranges merge too, so that "covers" sees one contiguous block.
                if merged and first <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], last)
                else:
                    merged.append([first, last])
            self._starts[version] = [m[0] for m in merged]
            self._ends[version] = [m[1] for m in merged]
        self._cidrs = tuple(dict.fromkeys(cidrs))

    def __len__(self) -> int:
        return len(self._cidrs)

    def __bool__(self) -> bool:
        return bool(self._cidrs)

    @property
    def cidrs(self) -> tuple[str, ...]:
        """The networks as given (normalised), duplicates removed, in input order."""
        return self._cidrs

    def _last_at_or_before(self, version: int, value: int) -> int:
        return bisect_right(self._starts[version], value) - 1

    def overlaps_range(self, version: int, first: int, last: int) -> bool:
        """True if any address in [first, last] is in the set."""
        i = self._last_at_or_before(version, last)
        return i >= 0 and self._ends[version][i] >= first

    def covers_range(self, version: int, first: int, last: int) -> bool:
        """True if every address in [first, last] is in the set."""
        i = self._last_at_or_before(version, first)
        return i >= 0 and self._ends[version][i] >= last

    def contains(self, ip_or_net: str) -> bool:
        """An address: is it in the set? A network: is all of it in the set? ValueError if invalid."""
        return self.covers_range(*parse_net(ip_or_net))

    def overlaps(self, ip_or_net: str) -> bool:
        """Is any part of this address or network in the set? ValueError if invalid."""
        return self.overlaps_range(*parse_net(ip_or_net))

    def __or__(self, other: NetSet) -> NetSet:
        return NetSet(self._cidrs + other._cidrs)


class Whitelist:
    """Addresses and networks never banned; loopback always included."""

    __slots__ = ("nets", "source", "_origins")

    def __init__(self, nets: Iterable[str] = (), source: str = "<memory>",
                 lines: Iterable[int | None] | None = None) -> None:
        """nets as CIDR text; lines: the file line of each net, for origins()."""
        nets = list(nets)
        numbers = list(lines) if lines is not None else [None] * len(nets)
        self.nets = NetSet([*LOOPBACK, *nets])
        self.source = source
        self._origins = [(*parse_net(n), None, n) for n in LOOPBACK]
        self._origins += [(*parse_net(n), line, n) for n, line in zip(nets, numbers, strict=True)]

    def contains(self, ip_or_net: str) -> bool:
        """An address: is it whitelisted? A network: is the whole network whitelisted?"""
        return self.nets.contains(ip_or_net)

    def overlaps(self, ip_or_net: str) -> bool:
        """Is any address of this network whitelisted? (The engine never bans such a network.)"""
        return self.nets.overlaps(ip_or_net)

    def __contains__(self, ip_or_net: str) -> bool:
        return self.contains(ip_or_net)

    def __repr__(self) -> str:
        return f"<Whitelist {len(self)} entries from {self.source}>"

    def __len__(self) -> int:
        return len(self.nets)

    @property
    def cidrs(self) -> tuple[str, ...]:
        return self.nets.cidrs

    def origins(self, ip_or_net: str) -> list[tuple[str, int | None, str]]:
        """(file, line, entry) of every entry overlapping this address or network; loopback
        entries have line None. A linear scan: for `logwatchctl check`, not the event path."""
        return self.origins_range(*parse_net(ip_or_net))

    def origins_range(self, version: int, first: int, last: int) -> list[tuple[str, int | None, str]]:
        """origins() of the range [first, last]."""
        found: list[tuple[str, int | None, str]] = []
        for v, lo, hi, line, text in self._origins:
            if v == version and lo <= last and first <= hi:
                found.append((self.source if line is not None else "built-in", line, text))
        return found

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "<string>") -> tuple[Whitelist, list[str]]:
        """Parse whitelist text; returns the whitelist and one warning per skipped line."""
        nets: list[str] = []
        where: list[int] = []
        warnings: list[str] = []
        for lineno, raw in enumerate(lines, 1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            if len(fields) != 1:
                warnings.append(f"{source}:{lineno}: bad entry {text!r}: one address or CIDR "
                                f"per line; line skipped")
                continue
            try:
                net, host_bits = parse_entry(fields[0])
            except ValueError as exc:
                warnings.append(f"{source}:{lineno}: bad entry {text!r}: {exc}; line skipped")
                continue
            if host_bits:
                warnings.append(f"{source}:{lineno}: {text!r} has host bits set; using {net}")
            widest = 8 if ":" not in net else 16
            if int(net.rsplit("/", 1)[1]) < widest:
                # Applied as written, but said: usually a typo (0.0.0.0/0 disables every ban).
                warnings.append(f"{source}:{lineno}: {text!r} is wider than /{widest}: nothing "
                                f"in {net} will ever be banned")
            nets.append(net)
            where.append(lineno)
        return cls(nets, source, lines=where), warnings

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> tuple[Whitelist, list[str]]:
        """Read a whitelist file; a missing or unreadable file gives loopback only plus a warning."""
        try:
            data = read_capped(path, WHITELIST_MAX_BYTES)   # no FIFO, no /dev/zero
        except FileNotFoundError:
            return cls(source=str(path)), [f"{path}: not found; whitelist holds loopback only"]
        except OSError as exc:
            return cls(source=str(path)), [
                f"{path}: cannot read ({exc.strerror or exc}); whitelist holds loopback only"]
        # Undecodable bytes become U+FFFD and make that one line invalid, not the whole file.
        text = data.decode("utf-8", errors="replace")
        return cls.from_lines(text.splitlines(), str(path))
