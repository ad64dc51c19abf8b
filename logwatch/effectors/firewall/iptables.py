"""Backend iptables: one DROP rule per ban in a dedicated chain jumped to from INPUT for the mail
ports, written in atomic iptables-restore batches (the ipset backend shares the INPUT rule code)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from logwatch.effectors.firewall.base import (
    Firewall,
    FirewallError,
    name_rule,
    net_text,
    normalize_net,
)
from logwatch.effectors.firewall.drift import diff, quick, wanted
from logwatch.effectors.firewall.entry import FIREWALLS, FirewallBackend
from logwatch.effectors.runner import XTABLES_WAIT
from logwatch.engine.model import Ban

# iptables chain names: at most 28 characters; the built-in chains are not ours to fill.
check_chain = name_rule(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}$", 28, ("INPUT", "OUTPUT", "FORWARD"))


def port_match(ports: Sequence[int]) -> str:
    """The iptables match for TCP to the mail ports, spelled exactly as iptables -S prints it."""
    if len(ports) == 1:
        return f"-p tcp -m tcp --dport {ports[0]}"
    return "-p tcp -m multiport --dports " + ",".join(str(p) for p in ports)



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


class IptablesBase(Firewall):
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
        self._run([self.TOOLS[family][1], "--noflush", f"--wait={XTABLES_WAIT}"], stdin=text)

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


class IptablesFirewall(IptablesBase):
    """One DROP rule per ban in a dedicated chain jumped to from INPUT for the mail ports."""

    backend = "iptables"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._state: dict[int, _TableState | None] = {4: None, 6: None}

    def _input_rule(self, family: int) -> str:
        return f"-A INPUT {port_match(self.ports)} -j {self.cfg.chain}"

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
        live = self._live(bans, self.clock())
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



    def drift(self, bans: Sequence[Ban], now: float) -> list[str]:
        want = wanted(bans, now)
        chain = self.cfg.chain
        out: list[str] = []
        for family in (4, 6):
            st = self._read(family)
            tag = f"ipv{family}"
            if not st.chain_exists:
                out.append(f"{tag}-chain-missing")
            if st.input_rules != [self._input_rule(family)]:
                out.append(f"{tag}-jump-rules={len(st.input_rules)}")
            have: set[str] = set()
            odd = 0
            for line in st.chain_rules:
                parts = line.split()
                if len(parts) == 6 and parts[:3] == ["-A", chain, "-s"] \
                        and parts[4:] == ["-j", "DROP"]:
                    net = quick(parts[3])
                    odd += net in have
                    have.add(net)
                else:
                    odd += 1
            if odd:
                out.append(f"{tag}-foreign-or-duplicate-rules={odd}")
            out += diff(tag, have, want[family])
        return out


FIREWALLS.register("iptables", FirewallBackend("iptables", IptablesFirewall,
                                               keys={"chain": check_chain}))
