"""Read-only engine queries for `logwatchctl offenders` and `logwatchctl check IP`. Pure, no I/O.

A mixin of Engine (logwatch/engine.py): it reads the engine's packed offender state and never
changes it, so asking never alters a score, a ban or the least-recently-seen order.
"""

from __future__ import annotations

import heapq
from itertools import islice
from typing import TYPE_CHECKING, Any

from logwatch.engine.offenders import (
    _BIAS,
    _KIND_MASK,
    _TIME_SHIFT,
    _USER_MASK,
    _USER_SHIFT,
    _hits,
)
from logwatch.engine.whitelist import LOOPBACK, net_text, parse_net
from logwatch.parsing.events import normalize_ip

if TYPE_CHECKING:
    from logwatch.engine.core import Engine


def _overlapping(cidrs: tuple[str, ...], rng: tuple[int, int, int]) -> list[str]:
    version, first, last = rng
    found = []
    for cidr in cidrs:
        v, lo, hi = parse_net(cidr)
        if v == version and lo <= last and first <= hi:
            found.append(cidr)
    return found


class EngineQueries:
    """offender(), offenders() and verdict(): what the engine knows about an address."""

    def _wall(self: Engine, t: int) -> float:
        """Wall-clock seconds of a packed hit time."""
        return (t - _BIAS + self._epoch_ms) / 1000

    def _offender_view(self: Engine, key: int, value: int, now: float) -> dict[str, Any] | None:
        """Score, threshold, reasons and decay times of one tracked offender; None if 0."""
        now_ms = self._ms(now)
        find_cut = now_ms - self._find_ms
        score, reasons, times = 0.0, {}, []
        users: set[int] = set()
        for h in _hits(value):
            index, t = h & _KIND_MASK, h >> _TIME_SHIFT
            if t > find_cut:
                weight = self._weights.get(index, 0.0)
                score += weight
                name = self._kind_names[index]
                reasons[name] = reasons.get(name, 0) + 1
                if weight:
                    times.append(t)
            user = (h >> _USER_SHIFT) & _USER_MASK
            if index == self._uu and self._distinct_on and user and t > now_ms - self._distinct_ms:
                users.add(user)
        if score <= 0 and not users:
            return None
        net = self._key_net(key)
        return {
            "ip": net, "score": round(score, 6), "threshold": self.bancfg.maxretry,
            "reasons": reasons, "distinct_users": len(users),
            "distinct_threshold": self.bancfg.distinct_users if self._distinct_on else None,
            # The score drops when its oldest counted hit leaves the window, and is 0 when
            # the newest does (unless new events come).
            "decays_at": self._wall(min(times) + self._find_ms) if times else None,
            "clears_at": self._wall(max(times) + self._find_ms) if times else None,
            "last_seen": self._wall(max(h >> _TIME_SHIFT for h in _hits(value))),
            "protected": self._protected.overlaps_range(*self._key_range(key)),
        }

    def _key_banned(self: Engine, key: int) -> bool:
        if key in self._banned_keys:
            return True
        version, first, last = self._key_range(key)
        return any(v == version and lo <= first and last <= hi for v, lo, hi in self._odd_bans)

    def offender(self: Engine, ip: str) -> dict[str, Any] | None:
        """The scoring state of this IP's offender network, or None if it has no score."""
        key = self._ip_key(ip)
        value = self._tracked.get(key) if key is not None else None
        if value is None:
            return None
        return self._offender_view(key, value, self.clock())

    def offenders(self: Engine, limit: int | None = None,
                  scan: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """(the offenders with a score that are not banned, highest score first, at most
        limit of them; how many there are in all). Walks every tracked network, or with
        `scan` only that many most recently seen (the status page: bounded work per request)."""
        now = self.clock()
        now_ms = self._ms(now)
        find_cut, distinct_cut = now_ms - self._find_ms, now_ms - self._distinct_ms
        weights, uu, distinct_on = self._weights, self._uu, self._distinct_on
        ranked = []
        # A cheap first pass ranks everyone; full views are built only for those shown.
        tracked = self._tracked.items()
        if scan is not None and scan < len(self._tracked):
            tracked = islice(reversed(self._tracked.items()), scan)   # type: ignore[assignment]
        for key, value in tracked:
            score, users, newest = 0.0, set(), 0
            for h in _hits(value):
                index, t = h & _KIND_MASK, h >> _TIME_SHIFT
                newest = t
                if t > find_cut:
                    score += weights.get(index, 0.0)
                if distinct_on and index == uu and t > distinct_cut:
                    user = (h >> _USER_SHIFT) & _USER_MASK
                    if user:
                        users.add(user)
            if (score > 0 or users) and not self._key_banned(key):
                ranked.append((score, len(users), newest, key))
        total = len(ranked)
        top = (heapq.nlargest(limit, ranked) if limit is not None and limit < total
               else sorted(ranked, reverse=True))
        views = [self._offender_view(key, self._tracked[key], now) for *_, key in top]
        return [v for v in views if v is not None], total

    def _ban_covering(self: Engine, ip: str) -> str | None:
        version, value, _ = parse_net(ip)
        key = self._ip_key(ip)
        if key is not None and key in self._banned_keys:
            return self._key_net(key)
        for net in self.bans:
            v, lo, hi = parse_net(net)
            if v == version and lo <= value <= hi:
                return net
        return None

    def banned_net(self: Engine, ip: str) -> str | None:
        """The live ban net holding this (normalised) IP, or None: O(1) for offender-sized
        bans, O(prefix lengths) for the others (the policy service asks on every request)."""
        key = self._ip_key(ip)
        if key is None:
            return None
        if key in self._banned_keys:
            return self._key_net(key)
        if not self._odd_set:
            return None
        version, value, _ = parse_net(ip)
        bits = 32 if version == 4 else 128
        for prefix in range(bits, 7, -1):
            host = (1 << (bits - prefix)) - 1
            first = value & ~host
            if (version, first, first | host) in self._odd_set:
                return net_text(version, first, prefix)
        return None

    def policy_exempt(self: Engine, ip: str) -> bool:
        """Granted (pop-before-smtp), mynetworks, whitelisted, own or loopback: S25R never
        applies to such a client."""
        return ip in self.grants or self._protected.contains(ip)

    def _protection(self: Engine, rng: tuple[int, int, int]) -> list[dict[str, Any]]:
        """Each whitelist line, mynetworks entry, own address or loopback touching rng."""
        found: list[dict[str, Any]] = []
        for file, line, entry in self.whitelist.origins_range(*rng):
            what = "loopback" if line is None else "whitelist"
            found.append({"what": what, "entry": entry, "file": file, "line": line})
        for entry in _overlapping(self._mynetworks.cidrs, rng):
            found.append({"what": "mynetworks", "entry": entry})
        for entry in _overlapping(self._own.cidrs, rng):
            found.append({"what": "own-address", "entry": entry})
        if not any(f["what"] == "loopback" for f in found):
            for entry in _overlapping(LOOPBACK, rng):
                found.append({"what": "loopback", "entry": entry})
        return found

    def verdict(self: Engine, ip: str) -> dict[str, Any]:
        """Everything the engine would do with this address; ValueError if it is not one."""
        norm = normalize_ip(str(ip).strip())
        if norm is None:
            raise ValueError(f"{ip!r} is not an IP address")
        key = self._ip_key(norm)
        assert key is not None
        net = self._key_net(key)
        own = parse_net(norm)
        grant = self.grants.get(norm)
        ban_net = self._ban_covering(norm)
        ban = self.bans.get(ban_net) if ban_net else None
        no_grant = ([{"what": "mynetworks", "entry": e}
                     for e in _overlapping(self._mynetworks.cidrs, own)]
                    + [{"what": "relay.exclude", "entry": e}
                       for e in _overlapping(self._exclude.cidrs, own)])
        return {
            "ip": norm, "offender_net": net,
            "whitelisted": self.whitelist.contains(norm),
            "protected": self._protected.overlaps(net),
            "protected_by": self._protection(self._key_range(key)),
            "granted": grant is not None,
            "grant": None if grant is None else {
                "since": grant.granted_at, "expires": grant.expires_at,
                "user": grant.user, "service": grant.service},
            "never_granted_by": no_grant,
            "banned": ban is not None,
            "ban": None if ban is None else {
                "ip": ban.net, "since": ban.since, "expires": ban.expires_at,
                "reason": ban.reason, "source": ban.source, "offences": ban.offences},
            "offender": None if ban is not None else self.offender(norm),
        }
