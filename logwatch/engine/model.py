"""Records shared by the engine, the store and the effectors: grants, bans, positions, effects."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Grant:
    """Relay permission for one IP after a POP/IMAP login."""

    ip: str
    user: str | None
    service: str | None
    granted_at: float
    expires_at: float


@dataclass(slots=True)
class Ban:
    """A firewall ban of one network (an IPv4 /32 or an IPv6 /64 by default)."""

    net: str                      # CIDR text, e.g. "192.0.2.7/32", "2001:db8:1:2::/64"
    since: float
    expires_at: float | None      # None: permanent
    score: float = 0.0
    reason: dict[str, int] = field(default_factory=dict)  # event kind -> count
    offences: int = 1             # how many times this net was banned, this one included
    source: str = "auto"          # "auto" (scoring) or "manual" (logwatchctl ban)


@dataclass(slots=True)
class Position:
    """Where the tailer stopped reading one file."""

    path: str
    inode: int
    dev: int
    offset: int
    fingerprint: str              # hex digest of the file's first line ("" if none yet)


@dataclass(slots=True)
class Suspension:
    """A SASL ID held or refused by Postfix's check_sasl_access table (logwatch.engine.accounts)."""

    user: str                     # the table key: the ID folded to lower case
    since: float
    expires_at: float
    score: float = 0.0
    reason: dict[str, float] = field(default_factory=dict)   # score component -> share
    offences: int = 1             # how many times this ID was suspended, this one included
    source: str = "auto"          # "auto" (score) or "manual" (logwatchctl suspend)


# Effect commands: the engine returns these; the daemon hands them to the effectors.

@dataclass(frozen=True, slots=True)
class GrantAdded:
    grant: Grant
    refreshed: bool = False       # True when the IP already had a grant (map needs no write)


@dataclass(frozen=True, slots=True)
class GrantRevoked:
    ip: str
    why: str                      # "expired", "revoked", "excluded", "flush"


@dataclass(frozen=True, slots=True)
class BanAdded:
    ban: Ban


@dataclass(frozen=True, slots=True)
class BanLifted:
    net: str
    why: str                      # "expired", "unban", "whitelisted", "flush"


@dataclass(frozen=True, slots=True)
class SuspensionAdded:
    suspension: Suspension


@dataclass(frozen=True, slots=True)
class SuspensionLifted:
    user: str
    why: str                      # "expired", "unsuspend", "never_suspend"


Effect = GrantAdded | GrantRevoked | BanAdded | BanLifted | SuspensionAdded | SuspensionLifted
