"""Backend ipset: hash:net sets with kernel timeouts, matched by one iptables/ip6tables rule in
INPUT; sets are changed in `ipset restore -exist` batches."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from logwatch.effectors.firewall.base import FirewallError, name_rule, net_text, normalize_net
from logwatch.effectors.firewall.drift import diff, quick, wanted
from logwatch.effectors.firewall.entry import FIREWALLS, FirewallBackend
from logwatch.effectors.firewall.iptables import IptablesBase, port_match
from logwatch.engine.model import Ban

if TYPE_CHECKING:
    from logwatch.daemon.config import FirewallConfig

# ipset stores timeouts in milliseconds in a signed 32-bit value: longer ones are refused.
IPSET_MAX_TIMEOUT = 2_147_483
check_set = name_rule(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}$", 31)


class IpsetFirewall(IptablesBase):
    """hash:net sets with kernel timeouts, matched by one iptables/ip6tables rule in INPUT."""

    backend = "ipset"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._names = {4: self.cfg.ipset_v4, 6: self.cfg.ipset_v6}
        self._ready = False

    def _input_rule(self, family: int) -> str:
        return (f"-A INPUT {port_match(self.ports)} -m set --match-set {self._names[family]} "
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
        live = self._live(bans, self.clock())
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



    def drift(self, bans: Sequence[Ban], now: float) -> list[str]:
        want = wanted(bans, now)
        out: list[str] = []
        have_sets = self._existing_sets()
        for family, name in self._names.items():
            tag = f"ipv{family}"
            held: set[str] = set()
            if name not in have_sets:
                out.append(f"{tag}-set-missing")
            else:
                for line in self._run(["ipset", "save", name]).splitlines():
                    parts = line.split(None, 3)
                    if len(parts) >= 3 and parts[0] == "add" and parts[1] == name:
                        held.add(quick(parts[2]))
            out += diff(tag, held, want[family])
            rules = self._read(family).input_rules
            if rules != [self._input_rule(family)]:
                out.append(f"{tag}-match-rules={len(rules)}")
        return out


def _maxelem(v: object) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
    return None if ok else f"must be a whole number greater than 0 (got {v!r})"


def _distinct_sets(cfg: FirewallConfig) -> list[tuple[str, str]]:
    return [("ipset_v6", "ipset_v4 and ipset_v6 must differ")] \
        if cfg.ipset_v4 == cfg.ipset_v6 else []


FIREWALLS.register("ipset", FirewallBackend(
    "ipset", IpsetFirewall, cross=_distinct_sets,
    keys={"ipset_v4": check_set, "ipset_v6": check_set, "ipset_maxelem": _maxelem}))
