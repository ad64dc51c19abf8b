"""A missing or 0-byte state.db must not wipe live protection: the bans in our firewall
chain/sets and the grants in the relay map are adopted into the new store instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from logwatch.engine.model import BanAdded, Effect, GrantAdded

log = logging.getLogger("logwatchd.adopt")

ADOPTED = "adopted"     # Ban.source and Grant.service of adopted entries


@dataclass
class Adoption:
    """What was found in the kernel and the map, and what became of it."""

    effects: list[Effect] = field(default_factory=list)
    bans: int = 0
    grants: int = 0
    skipped: list[str] = field(default_factory=list)


def live_entries(firewall: Any, relay_map: Any) -> tuple[list[str], list[str]]:
    """(nets in our firewall chain/sets, IPs in the relay map) as they are now."""
    nets = sorted(firewall.listing()) if firewall is not None else []
    ips = sorted(relay_map.listing()) if relay_map is not None else []
    return nets, ips


def adopt(engine: Any, nets: list[str], ips: list[str]) -> Adoption:
    """Turn live entries into engine state: bans for a full bantime, grants for a full grace
    (their real expiry died with the store); protected or nested entries are skipped."""
    result = Adoption()
    for net in nets:
        if net in engine.bans:
            continue          # the store had it (a store without the start mark)
        try:
            effects = engine.ban(net)
        except ValueError as exc:
            result.skipped.append(f"{net}: {exc}")
            continue
        for eff in effects:
            if isinstance(eff, BanAdded):
                eff.ban.source = ADOPTED
                engine.bans[eff.ban.net].source = ADOPTED
                result.bans += 1
        result.effects.extend(effects)
    for ip in ips:
        if ip in engine.grants:
            continue
        try:
            effects = engine.grant(ip, service=ADOPTED)
        except ValueError as exc:
            result.skipped.append(f"{ip}: {exc}")
            continue
        result.grants += sum(isinstance(e, GrantAdded) for e in effects)
        result.effects.extend(effects)
    return result
