"""Firewall effectors: an iptables chain, ipset sets, an nftables table, or a dry-run logger.

Every backend drives the system tools in batch mode (iptables-restore, ipset restore, nft -f -)
with argument lists, never a shell; only validated, normalised networks reach their input.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from logwatch.daemon.config import FirewallConfig
from logwatch.effectors.runner import run_tool
from logwatch.engine.model import Ban
from logwatch.engine.whitelist import normalize_net as canonical_net

_log = logging.getLogger("logwatchd.firewall")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BACKENDS = ("iptables", "ipset", "nftables", "none")
# ipset stores timeouts in milliseconds in a signed 32-bit value: longer ones are refused.
IPSET_MAX_TIMEOUT = 2_147_483
NFT_MAX_TIMEOUT = 365 * 86400
# One tool run: reading or rewriting 1,000,000 rules takes minutes on a loaded host; a tool
# hung on a lock must not stop the daemon for ever (the periodic check calls these too).
TOOL_TIMEOUT = 600.0
# multiport accepts at most 15 ports.
MAX_PORTS = 15
# nftables: prefixes go to interval sets; single addresses to plain hash sets, because nft reads
# a whole interval set back before changing it (a single add costs ~0.35 s at 100,000 elements).
NFT_SETS = {"ban4": (4, True), "ban6": (6, True), "host4": (4, False), "host6": (6, False)}

_CHAIN_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}$")
_IPSET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}$")
_NFT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_NETNS_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


class FirewallError(Exception):
    """A firewall tool failed or the configuration is unusable; carries the tool's stderr."""


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


def _port_match(ports: Sequence[int]) -> str:
    """The iptables match for TCP to the mail ports, spelled exactly as iptables -S prints it."""
    if len(ports) == 1:
        return f"-p tcp -m tcp --dport {ports[0]}"
    return "-p tcp -m multiport --dports " + ",".join(str(p) for p in ports)


def _check_config(cfg: FirewallConfig) -> list[int]:
    """Validate the names and ports that end up on command lines; return the de-duplicated ports."""
    if cfg.backend not in BACKENDS:
        raise FirewallError(f"unknown firewall backend {cfg.backend!r} (one of {', '.join(BACKENDS)})")
    if not _CHAIN_RE.match(cfg.chain) or cfg.chain in ("INPUT", "OUTPUT", "FORWARD"):
        raise FirewallError(f"bad chain name {cfg.chain!r}")
    for name in (cfg.ipset_v4, cfg.ipset_v6):
        if not _IPSET_RE.match(name):
            raise FirewallError(f"bad ipset name {name!r}")
    if cfg.ipset_v4 == cfg.ipset_v6:
        raise FirewallError("ipset_v4 and ipset_v6 must differ")
    if not _NFT_RE.match(cfg.nft_table):
        raise FirewallError(f"bad nftables table name {cfg.nft_table!r}")
    if not isinstance(cfg.ipset_maxelem, int) or cfg.ipset_maxelem < 1:
        raise FirewallError(f"bad ipset_maxelem {cfg.ipset_maxelem!r}")
    ports: list[int] = []
    for p in cfg.ports:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
            raise FirewallError(f"bad port {p!r}")
        if p not in ports:
            ports.append(p)
    if not ports or len(ports) > MAX_PORTS:
        raise FirewallError(f"need 1 to {MAX_PORTS} ports, got {len(ports)}")
    return ports


class Firewall:
    """Base: command running, input validation and the interface every backend implements."""

    backend = "none"

    def __init__(self, cfg: FirewallConfig, dry_run: bool = False,
                 log: logging.Logger | None = None, netns: str | None = None) -> None:
        self.cfg = cfg
        self.ports = _check_config(cfg)
        self.dry_run = dry_run
        self.log = log or _log
        if netns is not None and not _NETNS_RE.match(netns):
            raise FirewallError(f"bad network namespace name {netns!r}")
        self.netns = netns

    # -- helpers -------------------------------------------------------------------------

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        """Run one tool (inside the namespace if any); return stdout or raise FirewallError."""
        full = (["ip", "netns", "exec", self.netns] if self.netns else []) + argv
        try:
            proc = run_tool(full, stdin, timeout=TOOL_TIMEOUT)
        except OSError as exc:
            raise FirewallError(f"{argv[0]}: cannot run: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(f"{argv[0]}: no answer within {TOOL_TIMEOUT:.0f} s") from exc
        if proc.returncode != 0:
            raise FirewallError(f"{' '.join(argv)} failed (exit {proc.returncode}): "
                                f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

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


class NoneFirewall(Firewall):
    """Executes nothing: logs what it would do and tracks the would-be state in memory."""

    backend = "none"

    def __init__(self, cfg: FirewallConfig, dry_run: bool = True,
                 log: logging.Logger | None = None, netns: str | None = None,
                 would_be: str = "none") -> None:
        super().__init__(cfg, dry_run=True, log=log, netns=netns)
        self.would_be = would_be
        self._held: dict[str, float | None] = {}

    def setup(self) -> None:
        self.log.info("action=fw-setup backend=%s dry_run=1 ports=%s", self.would_be,
                      ",".join(map(str, self.ports)))

    def ban(self, bans: Sequence[Ban]) -> None:
        now = time.time()
        for text, (_net, left) in self._live(bans, now).items():
            self._held[text] = None if left is None else now + left
            self.log.info("action=fw-ban backend=%s dry_run=1 net=%s timeout=%s",
                          self.would_be, text, "permanent" if left is None else left)

    def unban(self, nets: Sequence[str]) -> None:
        for text in self._nets(nets):
            self._held.pop(text, None)
            self.log.info("action=fw-unban backend=%s dry_run=1 net=%s", self.would_be, text)

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        live = self._live(bans, now)
        self._held = {t: None if left is None else now + left for t, (_n, left) in live.items()}
        self.log.info("action=fw-reconcile backend=%s dry_run=1 count=%d", self.would_be, len(live))

    def listing(self) -> set[str]:
        now = time.time()
        return {t for t, exp in self._held.items() if exp is None or exp > now}

    def flush(self) -> None:
        self._held.clear()
        self.log.info("action=fw-flush backend=%s dry_run=1", self.would_be)


# -- iptables ------------------------------------------------------------------------------

@dataclass
class _TableState:
    """What iptables-save shows of the filter table for one family."""

    chain_exists: bool = False
    chain_rules: list[str] = field(default_factory=list)   # "-A CHAIN ..." lines in our chain
    input_rules: list[str] = field(default_factory=list)   # "-A INPUT ..." lines that are ours
    counts: Counter[str] | None = None                      # cache of nets(), kept in step

    def nets(self, chain: str) -> Counter[str]:
        """Nets of our own DROP rules (with their count); foreign rules are left out."""
        if self.counts is None:
            self.counts = Counter()
            for line in self.chain_rules:
                net = _drop_rule_net(line, chain)
                if net is not None:
                    self.counts[net] += 1
        return self.counts


def _drop_rule_net(line: str, chain: str) -> str | None:
    """The net of a rule we write ("-A CHAIN -s NET -j DROP"); None for anything else."""
    parts = line.split()
    if len(parts) == 6 and parts[:3] == ["-A", chain, "-s"] and parts[4:] == ["-j", "DROP"]:
        try:
            return net_text(normalize_net(parts[3]))
        except ValueError:
            return None
    return None


class _IptablesBase(Firewall):
    """Shared by the iptables and ipset backends: the filter-table rules in INPUT."""

    TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}

    def _read(self, family: int) -> _TableState:
        """Parse iptables-save -t filter for our chain's rules and our rules in INPUT."""
        out = self._run([self.TOOLS[family][0], "-t", "filter"])
        st = _TableState()
        for line in out.splitlines():
            if line.startswith(f":{self.cfg.chain} "):
                st.chain_exists = True
            elif line.startswith(f"-A {self.cfg.chain} "):
                st.chain_rules.append(line.strip())
            elif line.startswith("-A INPUT ") and self._is_our_input_rule(line.split(), family):
                st.input_rules.append(line.strip())
        return st

    def _restore(self, family: int, lines: list[str]) -> None:
        """Apply rule changes to the filter table in one atomic iptables-restore batch."""
        if not lines:
            return
        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        self._run([self.TOOLS[family][1], "--noflush", "-w"], stdin=text)

    def _input_rule(self, family: int) -> str:
        raise NotImplementedError

    def _is_our_input_rule(self, parts: list[str], family: int) -> bool:
        raise NotImplementedError

    def _input_fix(self, st: _TableState, family: int) -> list[str]:
        """Lines that leave exactly one correct rule of ours in INPUT, first in the chain."""
        want = self._input_rule(family)
        lines: list[str] = []
        kept = False
        for line in st.input_rules:
            if line == want and not kept:
                kept = True
                continue
            # Stale (other ports) or duplicated: delete by its exact spec.
            lines.append("-D" + line[2:])
        if not kept:
            # Inserted first so an earlier ACCEPT for the mail ports cannot bypass the bans.
            lines.append("-I INPUT 1" + want[len("-A INPUT"):])
        return lines


class IptablesFirewall(_IptablesBase):
    """One DROP rule per ban in a dedicated chain jumped to from INPUT for the mail ports."""

    backend = "iptables"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._state: dict[int, _TableState | None] = {4: None, 6: None}

    def _input_rule(self, family: int) -> str:
        return f"-A INPUT {_port_match(self.ports)} -j {self.cfg.chain}"

    def _is_our_input_rule(self, parts: list[str], family: int) -> bool:
        return len(parts) >= 2 and parts[-2] == "-j" and parts[-1] == self.cfg.chain

    def _load(self, family: int) -> _TableState:
        st = self._read(family)
        self._state[family] = st
        return st

    def _cached(self, family: int) -> _TableState:
        st = self._state[family]
        return st if st is not None else self._load(family)

    def _setup_lines(self, st: _TableState, family: int) -> list[str]:
        lines = [] if st.chain_exists else [f":{self.cfg.chain} - [0:0]"]
        return lines + self._input_fix(st, family)

    def _apply(self, family: int, build, commit) -> None:  # type: ignore[no-untyped-def]
        """Build lines from the cached state and apply; on failure re-read the kernel and retry once."""
        st = self._cached(family)
        try:
            self._restore(family, build(st))
        except FirewallError:
            # The cache may be stale (rules changed by hand): retry with the kernel's real state.
            st = self._load(family)
            self._restore(family, build(st))
        commit(st)

    def setup(self) -> None:
        for family in (4, 6):
            st = self._load(family)
            self._restore(family, self._setup_lines(st, family))
            self._state[family] = None
        self.log.info("action=fw-setup backend=iptables chain=%s ports=%s", self.cfg.chain,
                      ",".join(map(str, self.ports)))

    def ban(self, bans: Sequence[Ban]) -> None:
        live = self._live(bans, time.time())
        for family in (4, 6):
            nets = [t for t, (n, _l) in live.items() if n.version == family]
            if not nets:
                continue
            rules: list[str] = []

            def build(st: _TableState, nets: list[str] = nets, family: int = family,
                      rules: list[str] = rules) -> list[str]:
                have = st.nets(self.cfg.chain)
                rules[:] = [f"-A {self.cfg.chain} -s {t} -j DROP" for t in nets if t not in have]
                if not rules:
                    return []
                return self._setup_lines(st, family) + rules

            def commit(st: _TableState, family: int = family, rules: list[str] = rules) -> None:
                if rules and (not st.chain_exists or st.input_rules != [self._input_rule(family)]):
                    self._state[family] = None   # setup lines ran: re-read next time
                else:
                    st.chain_rules.extend(rules)
                    counts = st.nets(self.cfg.chain)
                    for r in rules:
                        counts[r.split()[3]] += 1

            self._apply(family, build, commit)
            self.log.info("action=fw-ban backend=iptables family=ipv%d count=%d new=%d",
                          family, len(nets), len(rules))

    def unban(self, nets: Sequence[str]) -> None:
        valid = self._nets(nets)
        for family in (4, 6):
            fam = [t for t, n in valid.items() if n.version == family]
            if not fam:
                continue

            def build(st: _TableState, fam: list[str] = fam) -> list[str]:
                have = st.nets(self.cfg.chain)
                # Delete every copy, so a duplicate added by hand cannot keep an unbanned net dropped.
                return [f"-D {self.cfg.chain} -s {t} -j DROP" for t in fam for _ in range(have[t])]

            def commit(st: _TableState, fam: list[str] = fam) -> None:
                gone = set(fam)
                st.chain_rules[:] = [r for r in st.chain_rules
                                     if _drop_rule_net(r, self.cfg.chain) not in gone]
                counts = st.nets(self.cfg.chain)
                for t in gone:
                    counts.pop(t, None)

            self._apply(family, build, commit)
            self.log.info("action=fw-unban backend=iptables family=ipv%d count=%d", family, len(fam))

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        live = self._live(bans, now)
        for family in (4, 6):
            want = [t for t, (n, _l) in live.items() if n.version == family]
            st = self._load(family)
            expected = [f"-A {self.cfg.chain} -s {t} -j DROP" for t in want]
            lines = self._input_fix(st, family)
            if not st.chain_exists or sorted(st.chain_rules) != sorted(expected):
                # Declaring an existing chain in a --noflush restore flushes it: the chain is
                # rewritten atomically, so foreign and duplicate rules go and nothing is unbanned
                # even for a moment.
                lines = [f":{self.cfg.chain} - [0:0]"] + lines + expected
                added = len(set(want) - set(st.nets(self.cfg.chain)))
                removed = len(st.chain_rules) - (len(want) - added)
            else:
                added = removed = 0
            self._restore(family, lines)
            # The chain is now exactly what we wrote: keep that as the cache (re-reading 100,000
            # rules would cost the next single ban most of a second).
            self._state[family] = _TableState(True, expected, [self._input_rule(family)],
                                              Counter(want))
            self.log.info("action=fw-reconcile backend=iptables family=ipv%d count=%d added=%d "
                          "removed=%d", family, len(want), added, removed)

    def listing(self) -> set[str]:
        out: set[str] = set()
        for family in (4, 6):
            out.update(self._load(family).nets(self.cfg.chain))
        return out

    def flush(self) -> None:
        for family in (4, 6):
            st = self._load(family)
            lines = ["-D" + line[2:] for line in st.input_rules]
            if st.chain_exists:
                lines += [f"-F {self.cfg.chain}", f"-X {self.cfg.chain}"]
            self._restore(family, lines)
            self._state[family] = None
        self.log.info("action=fw-flush backend=iptables chain=%s", self.cfg.chain)


# -- ipset ---------------------------------------------------------------------------------

class IpsetFirewall(_IptablesBase):
    """hash:net sets with kernel timeouts, matched by one iptables/ip6tables rule in INPUT."""

    backend = "ipset"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._names = {4: self.cfg.ipset_v4, 6: self.cfg.ipset_v6}
        self._ready = False

    def _input_rule(self, family: int) -> str:
        return (f"-A INPUT {_port_match(self.ports)} -m set --match-set {self._names[family]} "
                f"src -j DROP")

    def _is_our_input_rule(self, parts: list[str], family: int) -> bool:
        name = self._names[family]
        return any(parts[i] == "--match-set" and parts[i + 1] == name
                   for i in range(len(parts) - 1))

    def _ipset(self, lines: list[str]) -> None:
        if lines:
            self._run(["ipset", "restore", "-exist"], stdin="\n".join(lines) + "\n")

    def _existing_sets(self) -> set[str]:
        return set(self._run(["ipset", "list", "-n"]).split())

    def _read_set(self, name: str) -> dict[str, int]:
        """Members of one of our sets: net text -> timeout left (0 = permanent)."""
        out: dict[str, int] = {}
        for line in self._run(["ipset", "save", name]).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "add" and parts[1] == name:
                try:
                    text = net_text(normalize_net(parts[2]))
                except ValueError:
                    continue
                left = 0
                if "timeout" in parts[3:]:
                    left = int(parts[parts.index("timeout") + 1])
                out[text] = left
        return out

    def _create_lines(self, have: set[str]) -> list[str]:
        lines = []
        for family, name in self._names.items():
            if name in have:
                continue
            fam = "inet" if family == 4 else "inet6"
            # timeout 0: entries are permanent unless added with their own timeout.
            lines.append(f"create {name} hash:net family {fam} hashsize 1024 "
                         f"maxelem {self.cfg.ipset_maxelem} timeout 0")
        return lines

    def _check_maxelem(self, have: set[str]) -> None:
        for name in self._names.values():
            if name not in have:
                continue
            header = self._run(["ipset", "list", "-t", name])
            m = re.search(r"\bmaxelem (\d+)", header)
            if m and int(m.group(1)) != self.cfg.ipset_maxelem:
                # Changing maxelem needs the set recreated; flush_on_stop or `flush` does that.
                self.log.warning("action=fw-setup backend=ipset set=%s maxelem=%s configured=%d "
                                 "note=flush-to-resize", name, m.group(1), self.cfg.ipset_maxelem)
            if m is None or "timeout" not in header.split("Header:", 1)[-1]:
                raise FirewallError(f"ipset {name} exists without timeout support; "
                                    f"destroy it or choose another name")

    def setup(self) -> None:
        have = self._existing_sets()
        self._check_maxelem(have)
        self._ipset(self._create_lines(have))
        for family in (4, 6):
            self._restore(family, self._input_fix(self._read(family), family))
        self._ready = True
        self.log.info("action=fw-setup backend=ipset sets=%s,%s ports=%s", self.cfg.ipset_v4,
                      self.cfg.ipset_v6, ",".join(map(str, self.ports)))

    @staticmethod
    def _timeout(left: int | None) -> int:
        # 0 is permanent. Longer than the kernel allows: permanent too, and the daemon removes
        # the entry at the ban's expiry (a clamped timeout would end the ban early).
        return 0 if left is None or left > IPSET_MAX_TIMEOUT else left

    def ban(self, bans: Sequence[Ban]) -> None:
        if not self._ready:
            self.setup()
        live = self._live(bans, time.time())
        lines = [f"add {self._names[n.version]} {t} timeout {self._timeout(left)}"
                 for t, (n, left) in live.items()]
        # -exist: re-adding a present entry only refreshes its timeout, never duplicates.
        try:
            self._ipset(lines)
        except FirewallError:
            # Sets or rules removed behind our back: recreate them and try once more.
            self.setup()
            self._ipset(lines)
        self.log.info("action=fw-ban backend=ipset count=%d", len(lines))

    def unban(self, nets: Sequence[str]) -> None:
        valid = self._nets(nets)
        have = self._existing_sets()
        lines = [f"del {self._names[n.version]} {t}" for t, n in valid.items()
                 if self._names[n.version] in have]
        self._ipset(lines)
        self.log.info("action=fw-unban backend=ipset count=%d", len(lines))

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        live = self._live(bans, now)
        have = self._existing_sets()
        self._check_maxelem(have)
        lines = self._create_lines(have)
        removed = 0
        for name in self._names.values():
            if name in have:
                for text in self._read_set(name).keys() - live.keys():
                    lines.append(f"del {name} {text}")
                    removed += 1
        # Every live ban is (re)added: -exist re-asserts the timeout of the ones present.
        lines += [f"add {self._names[n.version]} {t} timeout {self._timeout(left)}"
                  for t, (n, left) in live.items()]
        self._ipset(lines)
        for family in (4, 6):
            self._restore(family, self._input_fix(self._read(family), family))
        self._ready = True
        self.log.info("action=fw-reconcile backend=ipset count=%d removed=%d", len(live), removed)

    def listing(self) -> set[str]:
        have = self._existing_sets()
        out: set[str] = set()
        for name in self._names.values():
            if name in have:
                out.update(self._read_set(name))
        return out

    def flush(self) -> None:
        for family in (4, 6):
            st = self._read(family)
            self._restore(family, ["-D" + line[2:] for line in st.input_rules])
        have = self._existing_sets()
        for name in self._names.values():
            if name in have:
                self._run(["ipset", "destroy", name])
        self._ready = False
        self.log.info("action=fw-flush backend=ipset sets=%s,%s", self.cfg.ipset_v4,
                      self.cfg.ipset_v6)


# -- nftables ------------------------------------------------------------------------------

def _contained(net: Network, kept: set[Network], lengths: set[int]) -> bool:
    """Whether a strictly broader net of `kept` (whose prefix lengths are `lengths`) holds net."""
    return any(n < net.prefixlen and net.supernet(new_prefix=n) in kept for n in lengths)


def _is_host(net: Network) -> bool:
    return net.prefixlen == net.max_prefixlen


def _nft_set(net: Network) -> str:
    return f"{'host' if _is_host(net) else 'ban'}{net.version}"


Items = dict[str, tuple[Network, int | None]]


def _collapse(items: Items) -> Items:
    """Drop prefixes inside another prefix of the batch: interval sets refuse overlaps."""
    out: Items = {}
    kept: set[Network] = set()
    lengths: set[int] = set()
    for text, (net, left) in sorted(items.items(), key=lambda kv: kv[1][0].prefixlen):
        if not _is_host(net):
            if _contained(net, kept, lengths):
                continue
            kept.add(net)
            lengths.add(net.prefixlen)
        out[text] = (net, left)
    return out


def _nft_elem(net: Network, left: int | None) -> str:
    name = str(net.network_address) if _is_host(net) else net_text(net)
    # nft refuses timeouts of a few years ("value too large"): such a ban goes in without one,
    # and the daemon removes it at its expiry.
    return name if left is None or left > NFT_MAX_TIMEOUT else f"{name} timeout {left}s"


def _nft_nets(val: object) -> list[str]:
    """Nets of one element value from `nft -j` (address, prefix or range)."""
    if isinstance(val, str):
        return [net_text(normalize_net(val))]
    if isinstance(val, dict) and "prefix" in val:
        p = val["prefix"]
        return [net_text(normalize_net(f"{p['addr']}/{p['len']}"))]
    if isinstance(val, dict) and "range" in val:
        lo, hi = (ipaddress.ip_address(a) for a in val["range"])
        return [net_text(n) for n in ipaddress.summarize_address_range(lo, hi)]  # type: ignore[arg-type]
    return []


class NftablesFirewall(Firewall):
    """Its own inet table: timeout sets for IPv4 and IPv6 and an input-hook drop chain."""

    backend = "nftables"
    CHUNK = 5000    # elements per statement: keeps nft's parser memory in bounds

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        # What we believe the kernel holds: net -> absolute expiry (None: permanent). Loaded
        # lazily; only used to tell a re-ban (timeout must change) from a new ban (plain add).
        self._known: dict[str, float | None] | None = None

    def _nft(self, text: str) -> None:
        self._run(["nft", "-f", "-"], stdin=text)

    def _definition(self) -> str:
        t = self.cfg.nft_table
        ports = str(self.ports[0]) if len(self.ports) == 1 else "{ " + ", ".join(
            map(str, self.ports)) + " }"
        sets = "".join(
            f"  set {name} {{ type ipv{fam}_addr; flags {'interval, ' if interval else ''}"
            f"timeout; }}\n" for name, (fam, interval) in NFT_SETS.items())
        rules = "".join(
            f"add rule inet {t} input tcp dport {ports} {'ip' if fam == 4 else 'ip6'} saddr "
            f"@{name} drop\n" for name, (fam, _i) in NFT_SETS.items())
        return (
            f"table inet {t} {{\n{sets}"
            # Before the usual filter priority; a drop in any base chain is final anyway.
            f"  chain input {{ type filter hook input priority filter - 10; policy accept; }}\n"
            f"}}\n"
            # Rewriting our chain's rules keeps setup idempotent and removes foreign rules.
            f"flush chain inet {t} input\n{rules}"
        )

    def _elements(self, verb: str, items: Items, with_timeout: bool) -> list[str]:
        groups: dict[str, list[str]] = {}
        for net, left in items.values():
            groups.setdefault(_nft_set(net), []).append(
                _nft_elem(net, left if with_timeout else None))
        lines = []
        for setname, elems in groups.items():
            for i in range(0, len(elems), self.CHUNK):
                chunk = ", ".join(elems[i:i + self.CHUNK])
                lines.append(f"{verb} element inet {self.cfg.nft_table} {setname} {{ {chunk} }}")
        return lines

    def _read(self) -> dict[str, int | None]:
        """Elements of our sets: net text -> seconds left (None = permanent); empty if no table."""
        try:
            out = self._run(["nft", "-j", "list", "table", "inet", self.cfg.nft_table])
        except FirewallError as exc:
            if "No such file or directory" in str(exc):
                return {}
            raise
        found: dict[str, int | None] = {}
        for obj in json.loads(out).get("nftables", []):
            s = obj.get("set")
            if not s or s.get("name") not in NFT_SETS:
                continue
            for elem in s.get("elem", []):
                left = None
                if isinstance(elem, dict) and "elem" in elem:
                    left = elem["elem"].get("expires")
                    elem = elem["elem"]["val"]
                for text in _nft_nets(elem):
                    found[text] = left
        return found

    def _load_known(self) -> dict[str, float | None]:
        now = time.time()
        self._known = {t: None if left is None else now + left for t, left in self._read().items()}
        return self._known

    def setup(self) -> None:
        self._nft(self._definition())
        self.log.info("action=fw-setup backend=nftables table=inet:%s ports=%s",
                      self.cfg.nft_table, ",".join(map(str, self.ports)))

    def _without_overlaps(self, items: Items) -> Items:
        """Drop prefixes overlapping a different prefix already in the kernel (logged)."""
        present = {n for n in map(normalize_net, self._read()) if not _is_host(n)}
        lengths = {p.prefixlen for p in present}
        out = {}
        for text, (net, left) in items.items():
            clash = not _is_host(net) and net not in present and (
                _contained(net, present, lengths)
                or any(p.prefixlen > net.prefixlen and p.version == net.version
                       and p.supernet(new_prefix=net.prefixlen) == net for p in present))
            if clash:
                self.log.warning("action=fw-skip backend=nftables net=%s reason=overlaps-existing",
                                 text)
                continue
            out[text] = (net, left)
        return out

    def _batch(self, fresh: Items, again: Items, remove: bool, retry: bool = True) -> None:
        """Add fresh elements; for `again` ones, add (no-op if present) + delete (so absent, with
        no error either way) and, unless removing, add back with the new timeout. One transaction."""
        lines = self._elements("add", again, False) + self._elements("delete", again, False)
        if not remove:
            lines += self._elements("add", {**again, **fresh}, True)
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        try:
            self._nft(text)
        except FirewallError as exc:
            if "No such file or directory" in str(exc):
                if remove:
                    return          # no table: nothing to remove
                # Table or set missing (first use, or flushed by hand): create it and retry.
                self.setup()
                self._nft(text)
            elif "overlap" in str(exc) and retry:
                fresh, again = self._without_overlaps(fresh), self._without_overlaps(again)
                if fresh or again:
                    self._batch(fresh, again, remove, retry=False)
            else:
                raise

    def ban(self, bans: Sequence[Ban]) -> None:
        now = time.time()
        live = _collapse(self._live(bans, now))
        known = self._known if self._known is not None else self._load_known()
        again = {t: v for t, v in live.items()
                 if t in known and (known[t] is None or known[t] > now)}  # type: ignore[operator]
        fresh = {t: v for t, v in live.items() if t not in again}
        try:
            self._batch(fresh, again, remove=False)
        except FirewallError:
            self._known = None      # unsure what went in: re-read next time
            raise
        for t, (_n, left) in live.items():
            known[t] = None if left is None else now + left
        self.log.info("action=fw-ban backend=nftables count=%d new=%d", len(live), len(fresh))

    def unban(self, nets: Sequence[str]) -> None:
        # Delete only what the kernel holds: "add then delete" of a prefix around a held one
        # would clash in the interval set, and deleting an absent element is an error.
        wanted = self._nets(nets)
        for attempt in (1, 2):
            known = self._known if self._known is not None else self._load_known()
            present: Items = {t: (n, None) for t, n in wanted.items() if t in known}
            lines = self._elements("delete", present, False)
            try:
                if lines:
                    self._nft("\n".join(lines) + "\n")
                break
            except FirewallError:
                self._known = None          # our view was stale: read the kernel, try once more
                if attempt == 2:
                    raise
        for t in present:
            known.pop(t, None)
        self.log.info("action=fw-unban backend=nftables count=%d", len(present))

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        live = _collapse(self._live(bans, now))
        # Diffing needs no kernel read (which costs more than the rewrite at 100,000 elements):
        # our own view is enough for the log line.
        before = self._known or {}
        t = self.cfg.nft_table
        # Replace the whole table in one transaction: every timeout re-asserted, foreign rules
        # and elements gone, other tables untouched, and no moment without the bans.
        text = (f"table inet {t} {{ }}\ndelete table inet {t}\n" + self._definition()
                + "\n".join(self._elements("add", live, True)) + "\n")
        self._nft(text)
        self._known = {k: None if left is None else now + left for k, (_n, left) in live.items()}
        self.log.info("action=fw-reconcile backend=nftables count=%d added=%s removed=%s",
                      len(live), len(live.keys() - before.keys()) if before else "?",
                      len(before.keys() - live.keys()) if before else "?")

    def listing(self) -> set[str]:
        return set(self._load_known())

    def flush(self) -> None:
        t = self.cfg.nft_table
        self._nft(f"table inet {t} {{ }}\ndelete table inet {t}\n")
        self._known = {}
        self.log.info("action=fw-flush backend=nftables table=inet:%s", t)


def make_firewall(cfg: FirewallConfig, dry_run: bool = False, log: logging.Logger | None = None,
                  netns: str | None = None) -> Firewall:
    """The configured backend; with dry_run (or backend none) one that only logs."""
    _check_config(cfg)
    if dry_run or cfg.backend == "none":
        return NoneFirewall(cfg, log=log, netns=netns, would_be=cfg.backend)
    cls = {"iptables": IptablesFirewall, "ipset": IpsetFirewall,
           "nftables": NftablesFirewall}[cfg.backend]
    return cls(cfg, dry_run=False, log=log, netns=netns)
