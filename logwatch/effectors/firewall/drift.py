"""Firewall drift: how the kernel differs from the bans we hold (issue 12 point 10).

An admin's `iptables -F`, a firewall service restart or `nft flush ruleset` removes our chain,
sets or table behind our back. The daemon calls drift() periodically and, when it reports
anything, repairs with setup() + reconcile() and a log line. Read-only: it never changes the
kernel. Each backend reads itself (its drift() method, next to its code) with the same tools
and parsing it uses; the helpers here compare what it read with the bans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from logwatch.effectors.firewall.base import net_text, normalize_net, remaining
from logwatch.engine.model import Ban

if TYPE_CHECKING:
    from logwatch.effectors.firewall.base import Firewall

# A ban this close to its expiry may already be gone from the kernel (or not yet swept from
# the engine): neither is drift worth a repair.
EXPIRY_SLACK = 2


def drift(fw: Firewall, bans: Sequence[Ban], now: float) -> list[str]:
    """What differs between the kernel and these bans, as short key=value texts; [] if none."""
    return fw.drift(bans, now)


# The check runs every minute at up to 1,000,000 bans: texts are compared as the tools print
# them (the engine's nets are canonical already) and only mismatches are parsed with ipaddress.

def quick(text: str) -> str:
    """A kernel listing's address or CIDR as CIDR text, without parsing it."""
    return text if "/" in text else text + ("/128" if ":" in text else "/32")


def _canonical(text: str) -> str:
    try:
        return net_text(normalize_net(text))
    except ValueError:
        return text


@dataclass
class Want:
    """Nets that must be in the kernel, and those that may be (ending within EXPIRY_SLACK)."""

    must: set[str] = field(default_factory=set)
    may: set[str] = field(default_factory=set)


def wanted(bans: Sequence[Ban], now: float) -> dict[int, Want]:
    """Per address family, the nets the kernel must and may hold now."""
    out = {4: Want(), 6: Want()}
    for ban in bans:
        left = remaining(ban, now)
        if left is not None and left <= -EXPIRY_SLACK:
            continue
        want = out[6 if ":" in ban.net else 4]
        want.may.add(ban.net)
        if left is None or left > EXPIRY_SLACK:
            want.must.add(ban.net)
    return out


def diff(tag: str, have: set[str], want: Want,
         covered: Callable[[str], bool] | None = None) -> list[str]:
    """Missing and extra counts; a pair that differs only in spelling is no difference."""
    missing, extra = want.must - have, have - want.may
    if missing and extra:
        extra_canon = {_canonical(t) for t in extra}
        missing_canon = {_canonical(t) for t in missing}
        missing = {t for t in missing if _canonical(t) not in extra_canon}
        extra = {t for t in extra if _canonical(t) not in missing_canon}
    if missing and covered is not None:
        missing = {t for t in missing if not covered(t)}
    out = []
    if missing:
        out.append(f"{tag}-missing={len(missing)}")
    if extra:
        out.append(f"{tag}-extra={len(extra)}")
    return out
