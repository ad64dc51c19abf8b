"""Firewall drift: how the kernel differs from the bans we hold (issue 12 point 10).

An admin's `iptables -F`, a firewall service restart or `nft flush ruleset` removes our chain,
sets or table behind our back. The daemon calls drift() periodically and, when it reports
anything, repairs with setup() + reconcile() and a log line. Read-only: it never changes the
kernel. Each backend is read with the same tools and parsing the backend itself uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .firewall import (
    NFT_SETS,
    Firewall,
    FirewallError,
    IpsetFirewall,
    IptablesFirewall,
    NftablesFirewall,
    _collapse,
    _nft_nets,
)
from .model import Ban

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


def _wanted(fw: Firewall, bans: Sequence[Ban], now: float,
            collapse: bool = False) -> tuple[set[str], set[str]]:
    """(nets that must be in the kernel, nets that may be): bans ending within EXPIRY_SLACK
    either way need not be there and may still be."""
    live = fw._live(bans, now)
    recent = fw._live(bans, now - EXPIRY_SLACK)
    if collapse:                        # nftables holds no prefix inside another one
        live, recent = _collapse(live), _collapse(recent)
    must = {t for t, (_n, left) in live.items() if left is None or left > EXPIRY_SLACK}
    return must, set(recent)


def _diff(family: str, have: set[str], must: set[str], may: set[str]) -> list[str]:
    out = []
    missing, extra = must - have, have - may
    if missing:
        out.append(f"{family}-missing={len(missing)}")
    if extra:
        out.append(f"{family}-extra={len(extra)}")
    return out


def _iptables(fw: IptablesFirewall, bans: Sequence[Ban], now: float) -> list[str]:
    must, may = _wanted(fw, bans, now)
    out: list[str] = []
    for family in (4, 6):
        st = fw._load(family)           # a fresh read, which also refreshes the ban cache
        tag = f"ipv{family}"
        if not st.chain_exists:
            out.append(f"{tag}-chain-missing")
        if st.input_rules != [fw._input_rule(family)]:
            out.append(f"{tag}-jump-rules={len(st.input_rules)}")
        counts = st.nets(fw.cfg.chain)
        if len(st.chain_rules) != sum(counts.values()) or any(n > 1 for n in counts.values()):
            out.append(f"{tag}-foreign-or-duplicate-rules")
        fam_must = {t for t in must if (":" in t) == (family == 6)}
        fam_may = {t for t in may if (":" in t) == (family == 6)}
        out += _diff(tag, set(counts), fam_must, fam_may)
    return out


def _ipset(fw: IpsetFirewall, bans: Sequence[Ban], now: float) -> list[str]:
    must, may = _wanted(fw, bans, now)
    out: list[str] = []
    have_sets = fw._existing_sets()
    for family, name in fw._names.items():
        tag = f"ipv{family}"
        if name not in have_sets:
            out.append(f"{tag}-set-missing")
            held: set[str] = set()
        else:
            held = set(fw._read_set(name))
        fam_must = {t for t in must if (":" in t) == (family == 6)}
        fam_may = {t for t in may if (":" in t) == (family == 6)}
        out += _diff(tag, held, fam_must, fam_may)
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
                if isinstance(elem, dict) and "elem" in elem:
                    elem = elem["elem"]["val"]
                held.update(_nft_nets(elem))
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
    if sorted(r for r in rules if r) != sorted((ports, name) for name in NFT_SETS) \
            or None in rules:
        out.append(f"rules={len(rules)}")
    must, may = _wanted(fw, bans, now, collapse=True)
    out += _diff("elements", set().union(*sets.values()) if sets else set(), must, may)
    return out
