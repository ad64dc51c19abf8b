"""Backend nftables: its own inet table with timeout sets for IPv4 and IPv6 (interval sets for
prefixes, plain ones for single addresses) and an input-hook drop chain, changed by `nft -f -`."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence

from logwatch.effectors.firewall.base import (
    Firewall,
    FirewallError,
    FirewallMissing,
    Network,
    name_rule,
    net_text,
    normalize_net,
)
from logwatch.effectors.firewall.drift import Want, diff, quick, wanted
from logwatch.effectors.firewall.entry import FIREWALLS, FirewallBackend
from logwatch.engine.model import Ban

NFT_MAX_TIMEOUT = 365 * 86400
# nftables: prefixes go to interval sets; single addresses to plain hash sets, because nft reads
# a whole interval set back before changing it (a single add costs ~0.35 s at 100,000 elements).
NFT_SETS = {"ban4": (4, True), "ban6": (6, True), "host4": (4, False), "host6": (6, False)}
check_table = name_rule(r"^[A-Za-z][A-Za-z0-9_]{0,63}$", 64)


class NftOverlap(FirewallError):
    """A prefix overlaps another one in an interval set (nft refuses the whole batch)."""


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
        try:
            self._run(["nft", "-f", "-"], stdin=text)
        except FirewallMissing:
            raise
        except FirewallError as exc:
            # nft reports a prefix clashing with one in an interval set only in its text.
            if "overlap" in str(exc):
                raise NftOverlap(str(exc)) from exc
            raise

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
        except FirewallMissing:
            return {}
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
        now = self.clock()
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
        except FirewallMissing:
            if remove:
                return          # no table: nothing to remove
            # Table or set missing (first use, or flushed by hand): create it and retry.
            self.setup()
            self._nft(text)
        except NftOverlap:
            if not retry:
                raise
            fresh, again = self._without_overlaps(fresh), self._without_overlaps(again)
            if fresh or again:
                self._batch(fresh, again, remove, retry=False)

    def ban(self, bans: Sequence[Ban]) -> None:
        now = self.clock()
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

    def drift(self, bans: Sequence[Ban], now: float) -> list[str]:
        try:
            raw = self._run(["nft", "-j", "list", "table", "inet", self.cfg.nft_table])
        except FirewallMissing:
            return ["table-missing"]
        sets: dict[str, set[str]] = {}
        rules: list[tuple[tuple[int, ...], str] | None] = []
        hooked = False
        for obj in json.loads(raw).get("nftables", []):
            if "set" in obj and obj["set"].get("name") in NFT_SETS:
                held = sets.setdefault(obj["set"]["name"], set())
                for elem in obj["set"].get("elem", []):
                    held.update(_nft_elem_text(elem))
            elif "chain" in obj and obj["chain"].get("name") == "input":
                hooked = obj["chain"].get("hook") == "input"
            elif "rule" in obj and obj["rule"].get("chain") == "input":
                rules.append(_nft_rule_key(obj["rule"]))
        out: list[str] = []
        if not hooked:
            out.append("chain-missing")
        if missing_sets := sorted(set(NFT_SETS) - set(sets)):
            out.append("sets-missing=" + ",".join(missing_sets))
        ports = tuple(sorted(self.ports))
        if None in rules or sorted(r for r in rules if r) != sorted((ports, n) for n in NFT_SETS):
            out.append(f"rules={len(rules)}")
        have = set().union(*sets.values()) if sets else set()
        want = wanted(bans, now)
        both = Want(want[4].must | want[6].must, want[4].may | want[6].may)
        return out + diff("elements", have, both, _covered_by(have))


# -- drift: reading our table back as `nft -j` prints it ------------------------------------

def _nft_rule_key(rule: dict) -> tuple[tuple[int, ...], str] | None:
    """(ports, set) of a rule shaped like ours (`tcp dport P ip saddr @set drop`), else None."""
    expr = rule.get("expr", [])
    if len(expr) != 3 or "drop" not in expr[2]:
        return None
    try:
        dport, saddr = expr[0]["match"], expr[1]["match"]
        if dport["left"]["payload"] != {"protocol": "tcp", "field": "dport"}:
            return None
        right = dport["right"]
        ports = tuple(sorted(right["set"] if isinstance(right, dict) else [right]))
        target = saddr["right"]
    except (KeyError, TypeError, IndexError):
        return None
    if not isinstance(target, str) or not target.startswith("@"):
        return None
    return ports, target[1:]


def _nft_elem_text(elem: object) -> list[str]:
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"]["val"]
    if isinstance(elem, str):
        return [quick(elem)]
    if isinstance(elem, dict) and "prefix" in elem:
        return [f"{elem['prefix']['addr']}/{elem['prefix']['len']}"]
    return _nft_nets(elem)        # a range: rare, parsed


def _covered_by(have: set[str]) -> Callable[[str], bool]:
    """Whether a net lies inside a broader prefix held (nft keeps no nested prefixes)."""
    prefixes: list[tuple[set[Network], set[int]]] = []

    def covered(text: str) -> bool:
        if not prefixes:
            kept = {normalize_net(t) for t in have if not t.endswith(("/32", "/128"))}
            prefixes.append((kept, {n.prefixlen for n in kept}))
        try:
            net = normalize_net(text)
        except ValueError:
            return False
        return _contained(net, *prefixes[0])

    return covered


FIREWALLS.register("nftables", FirewallBackend("nftables", NftablesFirewall,
                                               keys={"nft_table": check_table}))
