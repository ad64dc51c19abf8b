"""What every firewall backend shares: errors, network helpers, the config's name rules and the
Firewall base (tool running through the one runner, input validation, the injected clock)."""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from logwatch.clock import Clock, wall
from logwatch.effectors import runner
from logwatch.engine.model import Ban
from logwatch.engine.whitelist import normalize_net as canonical_net

if TYPE_CHECKING:
    from logwatch.daemon.config import FirewallConfig

_log = logging.getLogger("logwatchd.firewall")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# One tool run: reading or rewriting 1,000,000 rules takes minutes on a loaded host; a tool
# hung on a lock must not stop the daemon for ever (the periodic check calls these too).
TOOL_TIMEOUT = 600.0
# multiport accepts at most 15 ports.
MAX_PORTS = 15

_NETNS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


class FirewallError(Exception):
    """A firewall tool failed or the configuration is unusable; carries the tool's stderr."""


class FirewallMissing(FirewallError):
    """The tool reports that our chain, set or table does not exist (ENOENT)."""


def normalize_net(text: str) -> Network:
    """Parse a ban's network (CIDR or bare address); IPv4-mapped IPv6 becomes IPv4. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"not a network: {text!r}")
    net = ipaddress.ip_network(canonical_net(text))
    if net.prefixlen == 0:
        # A /0 would drop every client; that is never a ban, always a mistake.
        raise ValueError(f"refusing to ban everything: {text!r}")
    return net


def net_text(net: Network) -> str:
    """The canonical CIDR text used by listing() and the store."""
    return f"{net.network_address}/{net.prefixlen}"


def remaining(ban: Ban, now: float) -> int | None:
    """Whole seconds left in a ban (rounded up); None for permanent; 0 or less when expired."""
    if ban.expires_at is None:
        return None
    return math.ceil(ban.expires_at - now)


# -- config key rules: the one validation, used by the config loader and by the firewall -----

def name_rule(pattern: str, limit: int, reserved: tuple[str, ...] = ()) -> Any:
    """A check for a kernel object's name: None when valid, else the message."""
    regex = re.compile(pattern)

    def check(v: Any) -> str | None:
        if not isinstance(v, str) or not regex.match(v):
            return f"must be 1-{limit} characters matching {pattern} (got {v!r})"
        if v in reserved:
            return f"must not be a built-in chain ({', '.join(reserved)})"
        return None
    return check


def check_ports(v: Any) -> str | None:
    """The mail ports: 1 to MAX_PORTS distinct TCP ports."""
    if not isinstance(v, list):
        return f"must be a list of ports (got {v!r})"
    if not v:
        return "must not be empty"
    for p in v:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            return f"port out of range 1-65535: {p!r}"
    if not 0 < len(dict.fromkeys(v)) <= MAX_PORTS:
        return f"need 1 to {MAX_PORTS} ports, got {len(dict.fromkeys(v))}"
    return None


class Firewall:
    """Base: command running, input validation and the interface every backend implements."""

    backend = "none"

    def __init__(self, cfg: FirewallConfig, dry_run: bool = False,
                 log: logging.Logger | None = None, netns: str | None = None,
                 clock: Clock = wall, run: runner.Runner = runner.run) -> None:
        from logwatch.effectors.firewall.entry import validate

        problems = validate(cfg)
        if problems:
            key, message = problems[0]
            raise FirewallError(f"bad firewall.{key}: {message}")
        self.cfg = cfg
        self.ports: list[int] = list(dict.fromkeys(cfg.ports))
        self.dry_run = dry_run
        self.log = log or _log
        if netns is not None and not _NETNS_RE.match(netns):
            raise FirewallError(f"bad network namespace name {netns!r}")
        self.netns = netns
        self.clock = clock
        self.runner = run

    # -- helpers -------------------------------------------------------------------------

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        """Run one tool (inside the namespace if any); return stdout or raise FirewallError."""
        full = (["ip", "netns", "exec", self.netns] if self.netns else []) + argv
        try:
            if stdin is not None and self.runner is runner.run:
                # The restore tools write every ban: one is kept started (runner.Spares).
                return runner.run(full, stdin, timeout=TOOL_TIMEOUT, spare=True).stdout
            return self.runner(full, stdin, timeout=TOOL_TIMEOUT).stdout
        except runner.CommandTimeout as exc:
            raise FirewallError(f"{argv[0]}: no answer within {TOOL_TIMEOUT:.0f} s") from exc
        except runner.CommandFailed as exc:
            message = (f"{' '.join(argv)} failed (exit {exc.returncode}): "
                       f"{exc.stderr.strip() or exc.stdout.strip()}")
            # The tools say "No such file or directory" (strerror of ENOENT) for a missing
            # chain, set or table; that is the only place their text is read.
            missing = "No such file or directory" in exc.stderr
            raise (FirewallMissing if missing else FirewallError)(message) from exc
        except runner.ToolError as exc:
            raise FirewallError(f"{argv[0]}: cannot run: {exc.__cause__ or exc}") from exc

    def _nets(self, items: Iterable[str]) -> dict[str, Network]:
        """Validated, de-duplicated networks in input order; bad ones are logged and skipped."""
        out: dict[str, Network] = {}
        for item in items:
            try:
                net = normalize_net(item)
            except (ValueError, TypeError) as exc:
                self.log.error("action=fw-skip backend=%s net=%r error=%s", self.backend, item, exc)
                continue
            out.setdefault(net_text(net), net)
        return out

    def _live(self, bans: Sequence[Ban], now: float) -> dict[str, tuple[Network, int | None]]:
        """Valid, unexpired bans: net text -> (network, remaining seconds or None); last one wins."""
        out: dict[str, tuple[Network, int | None]] = {}
        for ban in bans:
            left = remaining(ban, now)
            if left is not None and left <= 0:
                continue
            for text, net in self._nets([ban.net]).items():
                out[text] = (net, left)
        return out

    # -- interface -----------------------------------------------------------------------

    def setup(self) -> None:
        """Create our chain/sets/table and the jump rule (idempotent)."""
        raise NotImplementedError

    def ban(self, bans: Sequence[Ban]) -> None:
        """Add these bans in one batch; a net already present is not duplicated."""
        raise NotImplementedError

    def unban(self, nets: Sequence[str]) -> None:
        """Remove these nets in one batch; absent ones are ignored."""
        raise NotImplementedError

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        """Make the kernel hold exactly the unexpired ones of these bans."""
        raise NotImplementedError

    def listing(self) -> set[str]:
        """The nets our chain/sets hold now, as canonical CIDR text."""
        raise NotImplementedError

    def flush(self) -> None:
        """Remove our chain/sets/table and the jump rules entirely."""
        raise NotImplementedError

    def drift(self, bans: Sequence[Ban], now: float) -> list[str]:
        """Read-only: how the kernel differs from these bans ([] when in step, or holding nothing)."""
        return []
