"""Bans: automatic (from scoring) and manual, growth on repeat, no nested networks, lifting.
A mixin of Engine (logwatch.engine.core), which holds the state."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from logwatch.engine.model import Ban, BanAdded, BanLifted, Effect
from logwatch.engine.offenders import _V6_FLAG
from logwatch.engine.state import EngineState
from logwatch.engine.whitelist import net_text, parse_net, range_text


class BanBook(EngineState):
    """Ban bookkeeping and the manual ban/unban/flush commands (state lives in Engine)."""

    def _reindex_bans(self) -> None:
        # Bans shaped like an offender key are found by key; others (manual /24, /128 ...) by range.
        self._banned_keys: set[int] = set()
        self._odd_bans: list[tuple[int, int, int]] = []
        self._odd_set: set[tuple[int, int, int]] = set()    # the same, for banned_net()
        for net in self.bans:
            self._index_ban(net)

    def _index_ban(self, net: str) -> None:
        """Index a held ban for _is_banned() and banned_net(); _unindex_ban() undoes it."""
        key = self._net_key(net)
        if key is not None:
            self._banned_keys.add(key)
        else:
            rng = parse_net(net)
            self._odd_bans.append(rng)
            self._odd_set.add(rng)

    def _lift_protected_bans(self) -> list[Effect]:
        nets = [net for net in self.bans if self._protected.overlaps(net)]
        return self._lift(nets, "whitelisted")

    def narrowest_unprotected(self, ip: str) -> str | None:
        """The shortest prefix around ip, longer than the offender prefix, that holds no
        protected address; None when even the address alone is protected."""
        try:
            version, value, _ = parse_net(ip)
        except ValueError:
            return None
        bits = 32 if version == 4 else 128
        start = self._v4_prefix if version == 4 else self._v6_prefix
        for prefix in range(start + 1, bits + 1):
            host = (1 << (bits - prefix)) - 1
            first = value & ~host
            if not self._protected.overlaps_range(version, first, first | host):
                return net_text(version, first, prefix)
        return None

    def _duration(self, previous: int) -> float | None:
        cfg = self.bancfg
        if cfg.permanent_after is not None and previous >= cfg.permanent_after:
            return None
        try:
            duration = cfg.bantime * cfg.growth ** previous
        except OverflowError:
            duration = math.inf
        return min(duration, cfg.max_bantime)

    def _nesting(self, net: str) -> tuple[str | None, list[str]]:
        """(a ban containing net, the bans net contains). nftables interval sets cannot hold
        one network inside another, so the engine never keeps nested bans."""
        version, first, last = parse_net(net)
        bits = 32 if version == 4 else 128
        prefix = bits - (last - first).bit_length()
        standard = self._v4_prefix if version == 4 else self._v6_prefix
        if prefix < standard:          # wider than an offender network: rare, look at all
            others = [(n, parse_net(n)) for n in self.bans]
        else:                          # only odd (manual) bans and the offender net around it
            others = [(range_text(*r), r) for r in self._odd_bans]
            if prefix > standard:
                key = (first & self._v4_mask if version == 4
                       else _V6_FLAG | (first & self._v6_mask))
                if key in self._banned_keys:
                    others.append((self._key_net(key), self._key_range(key)))
        wider, inside = None, []
        for other, (v, lo, hi) in others:
            if v != version or other == net:
                continue
            if lo <= first and last <= hi:
                wider = other
            elif first <= lo and hi <= last:
                inside.append(other)
        return wider, inside

    def _add_ban(self, net: str, now: float, score: float, reason: dict[str, int], source: str,
                 duration: float | None) -> list[Effect]:
        """Ban net; bans inside it are lifted into it (the later expiry wins)."""
        history = self._history.get(net)
        previous = int(history[0]) if history else 0
        if source == "auto":
            duration = self._duration(previous)
            self._history[net] = [previous + 1, now]
            self._history.move_to_end(net)
            if len(self._history) > self.bancfg.max_tracked:
                self._history.popitem(last=False)
        expires_at = None if duration is None or math.isinf(duration) else now + duration
        _wider, inside = self._nesting(net)
        for other in inside:
            other_expiry = self.bans[other].expires_at
            if expires_at is not None and (other_expiry is None or other_expiry > expires_at):
                expires_at = other_expiry
        effects = self._lift(inside, "covered")
        ban = Ban(net=net, since=now, expires_at=expires_at, score=score, reason=reason,
                  offences=previous + 1, source=source)
        self.bans[net] = ban
        self._index_ban(net)
        self._push(expires_at, "b", net)
        self._counters["bans_added"] += 1
        effects.append(BanAdded(ban))
        return effects

    def _lift(self, nets: Sequence[str], why: str) -> list[Effect]:
        effects: list[Effect] = []
        for net in nets:
            if self.bans.pop(net, None) is None:
                continue
            self._unindex_ban(net)
            self._counters["bans_lifted"] += 1
            effects.append(BanLifted(net, why))
        return effects

    def _unindex_ban(self, net: str) -> None:
        key = self._net_key(net)
        if key is not None:
            self._banned_keys.discard(key)
        else:
            rng = parse_net(net)
            if rng in self._odd_bans:
                self._odd_bans.remove(rng)
            self._odd_set.discard(rng)

    def _manual_net(self, ip_or_net: str) -> str:
        """A bare address names its offender network (/32, /64 ...); a CIDR is taken as given."""
        text = str(ip_or_net).strip()
        version, first, last = parse_net(text)      # ValueError if invalid
        if "/" not in text:
            if version == 4:
                return self._key_net(first & self._v4_mask)
            return self._key_net(_V6_FLAG | (first & self._v6_mask))
        return range_text(version, first, last)

    def ban(self, ip_or_net: str, duration: float | None = None, *,
            permanent: bool = False) -> list[Effect]:
        """Manual ban (logwatchctl ban); ValueError for invalid or protected addresses."""
        net = self._manual_net(ip_or_net)
        if self._protected.overlaps(net):
            raise ValueError(f"{net} is whitelisted, loopback, local or in mynetworks; not banned")
        if duration is None:
            duration = self.bancfg.bantime
        if not duration > 0:
            raise ValueError(f"ban duration must be positive, not {duration}")
        if permanent:
            duration = math.inf
        now = self.clock()
        wider, _inside = self._nesting(net)
        if wider is not None:
            raise ValueError(f"{net} is inside the ban of {wider} already")
        key = self._net_key(net)
        if key is not None:
            self._tracked.pop(key, None)
        if self.bans.pop(net, None) is not None:
            self._unindex_ban(net)
        return self._add_ban(net, now, 0.0, {}, "manual", duration)

    def unban(self, ip_or_net: str) -> list[Effect]:
        """Lift a ban now (logwatchctl unban); [] if that network is not banned."""
        text = str(ip_or_net).strip()
        net = self._manual_net(text)
        if net not in self.bans and "/" not in text:
            # The address may also have been banned on its own (a manual /32 or /128 ban).
            version, first, _ = parse_net(text)
            net = net_text(version, first, 32 if version == 4 else 128)
        return self._lift([net], "unban")

    def flush(self) -> list[Effect]:
        """Lift every ban (grants, scores and ban history stay)."""
        return self._lift(list(self.bans), "flush")

    def offender_rows(self, nets: Iterable[str] | None = None) -> list[tuple[str, int, float]]:
        """Ban history as (net, bans so far, time of the last ban), for Store.put_offenders;
        only of `nets` when given (a ban batch), else all of it."""
        if nets is None:
            return [(net, int(h[0]), float(h[1])) for net, h in self._history.items()]
        rows = []
        for net in nets:
            h = self._history.get(net)
            if h is not None:
                rows.append((net, int(h[0]), float(h[1])))
        return rows
