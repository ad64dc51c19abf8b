"""Value checks for config keys: each takes the (type-checked) value and returns an error
message or None. Shared by the config loader and the registries' entries (sources, map types)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]


def positive(v: Any) -> str | None:
    """Finite and > 0."""
    # .inf/.nan are YAML floats: inf overflows int() later, nan compares false to everything.
    if not math.isfinite(v):
        return f"must be a finite number (got {v!r})"
    return None if v > 0 else "must be greater than 0"


def non_negative(v: Any) -> str | None:
    """Finite and >= 0."""
    if not math.isfinite(v):
        return f"must be a finite number (got {v!r})"
    return None if v >= 0 else "must not be negative"


def one_of(choices: tuple[str, ...]) -> Check:
    """One of these names."""
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)} (got {v!r})"
    return check


def int_range(lo: int, hi: int) -> Check:
    """lo <= v <= hi."""
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi} (got {v})"
    return check


def abs_path(v: Any) -> str | None:
    """An absolute path."""
    return None if v.startswith("/") else f"must be an absolute path (got {v!r})"


def abs_paths(v: Any) -> str | None:
    """A list of absolute paths."""
    for p in v:
        if not p.startswith("/"):
            return f"must be absolute paths (got {p!r})"
    return None


def cidrs(v: Any) -> str | None:
    """A list of IP addresses or networks."""
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"not an IP address or CIDR: {item!r}"
    return None


def regexes(v: Any) -> str | None:
    """A list of valid regular expressions."""
    for p in v:
        try:
            re.compile(p)
        except re.error as exc:
            return f"invalid regular expression {p!r}: {exc}"
    return None


def optional(check: Check) -> Check:
    """None is fine, anything else goes through check."""
    return lambda v: None if v is None else check(v)


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT" ("127.0.0.1:9189", "[::1]:9189", "localhost:9189") -> (host, port);
    the host is an IP address literal or localhost. ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port from 1 to 65535 (got {text!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port} (got {text!r})")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"the host must be an IP address or localhost (got {host!r}); "
                             "[::1]:PORT for IPv6") from None
    return host, int(port)


def listen_address(v: Any) -> str | None:
    """A HOST:PORT listening address (parse_listen)."""
    try:
        parse_listen(v)
    except ValueError as exc:
        return str(exc)
    return None


def web_token(v: Any) -> str | None:
    """A secret of 16 to 256 printable characters without spaces (it goes in a header)."""
    if not 16 <= len(v) <= 256 or not all(33 <= ord(c) < 127 for c in v):
        return "must be 16 to 256 printable ASCII characters without spaces"
    return None
