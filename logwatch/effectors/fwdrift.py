"""Firewall drift: how the kernel differs from the bans we hold (issue 12 point 10).

An admin's `iptables -F`, a firewall service restart or `nft flush ruleset` removes our chain,
sets or table behind our back. The daemon calls drift() periodically and, when it reports
anything, repairs with setup() + reconcile() and a log line. Read-only: it never changes the
kernel. Each backend is read with the same tools and parsing the backend itself uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from logwatch.effectors.firewall import (
    NFT_SETS,
    Firewall,
    FirewallError,
    IpsetFirewall,
    IptablesFirewall,
    Network,
    NftablesFirewall,
    _contained,
    _nft_nets,
    net_text,
    normalize_net,
    remaining,
)
from logwatch.engine.model import Ban

# A ban this close to its expiry may already be gone from the kernel (or not yet swept from
# the engine): neither is drift worth a repair.
EXPIRY_SLACK = 2


def drift(fw: Firewall, bans: Sequence[Ban], now: float) -> list[str]:
    """What differs between the kernel and these bans, as short key=value texts; [] if none."""
    if isinstance(fw, IptablesFirewall):
        return _iptables(fw, bans, now)
    if isinstance(fw, IpsetFirewall):
        return _ipset(fw, bans, now)
    if isinstance(fw, NftablesFirewall):
        return _nftables(fw, bans, now)
    return []          # dry run / backend none: nothing held in the kernel


# The check runs every minute at up to 1,000,000 bans: texts are compared as the tools print
# them (the engine's nets are canonical already) and only mismatches are parsed with ipaddress.

def _quick(text: str) -> str:
    """A kernel listing's address or CIDR as CIDR text, without parsing it."""
    return text if "/" in text else text + ("/128" if ":" in text else "/32")


def _canonical(text: str) -> str:
    try:
        return net_text(normalize_net(text))
    except ValueError:
        return text


@dataclass
class _Want:
    """Nets that must be in the kernel, and those that may be (ending within EXPIRY_SLACK)."""

    must: set[str] = field(default_factory=set)
    may: set[str] = field(default_factory=set)


def _wanted(bans: Sequence[Ban], now: float) -> dict[int, _Want]:
    out = {4: _Want(), 6: _Want()}
    for ban in bans:
        left = remaining(ban, now)
        if left is not None and left <= -EXPIRY_SLACK:
            continue
        want = out[6 if ":" in ban.net else 4]
        want.may.add(ban.net)
        if left is None or left > EXPIRY_SLACK:
            want.must.add(ban.net)
    return out


def _diff(tag: str, have: set[str], want: _Want,
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


def _iptables(fw: IptablesFirewall, bans: Sequence[Ban], now: float) -> list[str]:
    wanted = _wanted(bans, now)
    chain = fw.cfg.chain
    out: list[str] = []
    for family in (4, 6):
        st = fw._read(family)
        tag = f"ipv{family}"
        if not st.chain_exists:
            out.append(f"{tag}-chain-missing")
        if st.input_rules != [fw._input_rule(family)]:
            out.append(f"{tag}-jump-rules={len(st.input_rules)}")
        have: set[str] = set()
        odd = 0
        for line in st.chain_rules:
            parts = line.split()
            if len(parts) == 6 and parts[:3] == ["-A", chain, "-s"] and parts[4:] == ["-j", "DROP"]:
                net = _quick(parts[3])
                odd += net in have
                have.add(net)
            else:
                odd += 1
        if odd:
            out.append(f"{tag}-foreign-or-duplicate-rules={odd}")
        out += _diff(tag, have, wanted[family])
    return out


def _ipset(fw: IpsetFirewall, bans: Sequence[Ban], now: float) -> list[str]:
    wanted = _wanted(bans, now)
    out: list[str] = []
    have_sets = fw._existing_sets()
    for family, name in fw._names.items():
        tag = f"ipv{family}"
        held: set[str] = set()
        if name not in have_sets:
            out.append(f"{tag}-set-missing")
        else:
            for line in fw._run(["ipset", "save", name]).splitlines():
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[0] == "add" and parts[1] == name:
                    held.add(_quick(parts[2]))
        out += _diff(tag, held, wanted[family])
        rules = fw._read(family).input_rules
        if rules != [fw._input_rule(family)]:
            out.append(f"{tag}-match-rules={len(rules)}")
    return out


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
        return [_quick(elem)]
    if isinstance(elem, dict) and "prefix" in elem:
        return [f"{elem['prefix']['addr']}/{elem['prefix']['len']}"]
    return _nft_nets(elem)        # a range: rare, parsed


def _nftables(fw: NftablesFirewall, bans: Sequence[Ban], now: float) -> list[str]:
    try:
        raw = fw._run(["nft", "-j", "list", "table", "inet", fw.cfg.nft_table])
    except FirewallError as exc:
        if "No such file or directory" in str(exc):
            return ["table-missing"]
        raise
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
    ports = tuple(sorted(fw.ports))
    if None in rules or sorted(r for r in rules if r) != sorted((ports, n) for n in NFT_SETS):
        out.append(f"rules={len(rules)}")
    have = set().union(*sets.values()) if sets else set()
    wanted = _wanted(bans, now)
    both = _Want(wanted[4].must | wanted[6].must, wanted[4].may | wanted[6].may)
    return out + _diff("elements", have, both, _covered_by(have))


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
