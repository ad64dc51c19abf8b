"""Offender scoring: hits packed one int per offender network, windows in log time, the
decision to ban. A mixin of Engine (logwatch.engine.core), which holds the state."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Sequence

from logwatch.engine.model import Effect
from logwatch.engine.state import EngineState
from logwatch.engine.whitelist import net_text, parse_net
from logwatch.parsing.events import Event

# Tracked offender state is packed into one int per offender to keep 1,000,000 of them well
# under 300 MB: each hit is (time << 37) | (user-name hash << 5) | kind index, _HIT_BITS wide,
# oldest hit in the lowest bits. Times are milliseconds since the engine started plus _BIAS,
# so every hit is non-zero in its top bits and the hit count follows from bit_length().
_KIND_BITS = 5
_USER_BITS = 32
_TIME_BITS = 42
_USER_SHIFT = _KIND_BITS
_TIME_SHIFT = _KIND_BITS + _USER_BITS
_HIT_BITS = _TIME_SHIFT + _TIME_BITS
_KIND_MASK = (1 << _KIND_BITS) - 1
_USER_MASK = (1 << _USER_BITS) - 1
_HIT_MASK = (1 << _HIT_BITS) - 1
_BIAS = 1 << (_TIME_BITS - 2)      # ~35 years of clock steps backwards stay positive
_TIME_MAX = (1 << _TIME_BITS) - 1
_V6_FLAG = 1 << 128          # offender keys: IPv4 network int, or this flag | IPv6 network int
_EPS = 1e-9                  # float weights (0.1 * 10) must still reach maxretry


PREFIX_FALLBACK = "prefix-fallback"   # Ban.reason key: the offender prefix a ban was narrowed from


# ip text -> _address_value(): offenders come back thousands of times (a catch-up on an old
# log scores them all), and ipaddress parsing is most of an event's cost.
_ADDRESS_VALUES: dict[str, int | None] = {}


def _address_value(ip: str) -> int | None:
    """IPv4 as its int (IPv4-mapped IPv6 too), IPv6 as _V6_FLAG | int, None if invalid (memoised)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        value = None
    else:
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped      # events are normalised already; manual input may not be
        value = int(addr) if addr.version == 4 else _V6_FLAG | int(addr)
    if len(_ADDRESS_VALUES) >= 65536:
        _ADDRESS_VALUES.clear()
    _ADDRESS_VALUES[ip] = value
    return value


def _hits(value: int) -> list[int]:
    """The hits packed in one tracked value, oldest first."""
    count = (value.bit_length() - 1) // _HIT_BITS + 1
    return [(value >> (i * _HIT_BITS)) & _HIT_MASK for i in range(count)]


def _pack(hits: Sequence[int]) -> int:
    value = 0
    for i, hit in enumerate(hits):
        value |= hit << (i * _HIT_BITS)
    return value


def _newest_time(value: int) -> int:
    return (value >> (((value.bit_length() - 1) // _HIT_BITS) * _HIT_BITS)) >> _TIME_SHIFT


def _user_hash(user: str) -> int:
    # Only distinctness matters, within this process; 0 means "no user name".
    return (hash(user.lower()) & _USER_MASK) or 1


class OffenderScoring(EngineState):
    """Offender keys, packed hits and the ban decision (state lives in Engine)."""

    def _ms(self, now: float) -> int:
        """Packed time of a clock reading: milliseconds since start, biased, clamped to the field."""
        return min(max(round(now * 1000) - self._epoch_ms + _BIAS, 1), _TIME_MAX)

    def _kind(self, kind: str) -> int:
        index = self._kind_index.get(kind)
        if index is None:
            if len(self._kind_names) > _KIND_MASK:
                return -1
            index = len(self._kind_names)
            self._kind_index[kind] = index
            self._kind_names.append(kind)
        return index

    def _ip_key(self, ip: str) -> int | None:
        value = _ADDRESS_VALUES.get(ip, -1)
        if value == -1:
            value = _address_value(ip)
        if value is None:
            return None
        if value < _V6_FLAG:
            return value & self._v4_mask
        return _V6_FLAG | (value & self._v6_mask)

    def _key_net(self, key: int) -> str:
        if key & _V6_FLAG:
            return net_text(6, key ^ _V6_FLAG, self._v6_prefix)
        return net_text(4, key, self._v4_prefix)

    def _net_key(self, net: str) -> int | None:
        """The offender key of a CIDR if it has exactly the offender prefix length, else None."""
        version, first, last = parse_net(net)
        bits = 32 if version == 4 else 128
        prefix = bits - (last - first).bit_length()
        if version == 4:
            return first if prefix == self._v4_prefix else None
        return _V6_FLAG | first if prefix == self._v6_prefix else None

    def _key_range(self, key: int) -> tuple[int, int, int]:
        if key & _V6_FLAG:
            first = key ^ _V6_FLAG
            return 6, first, first | ((1 << (128 - self._v6_prefix)) - 1)
        return 4, key, key | ((1 << (32 - self._v4_prefix)) - 1)

    def _is_banned(self, key: int, ip: str) -> bool:
        if key in self._banned_keys:
            return True
        if self._odd_bans:
            version, value, _ = parse_net(ip)
            for v, first, last in self._odd_bans:
                if v == version and first <= value <= last:
                    return True
        return False

    def _prune(self, now: float) -> None:
        # Keys are in least-recently-seen order, so the expired ones are at the front.
        cutoff = self._ms(now) - self._horizon_ms
        tracked = self._tracked
        while tracked:
            key = next(iter(tracked))
            if _newest_time(tracked[key]) > cutoff:
                break
            del tracked[key]
            self._counters["pruned"] += 1

    def _score(self, event: Event, index: int) -> list[Effect]:
        key = self._ip_key(event.ip)
        if key is None:
            self._counters["ignored_invalid"] += 1
            return []
        if self._is_banned(key, event.ip):
            self._counters["ignored_banned"] += 1
            return []
        now = self.clock()
        when = self.event_time(event, now)
        if when * 1000 <= round(now * 1000) - self._horizon_ms:
            # Older than every window: it can take part in no ban that matters now.
            self._counters["ignored_stale"] += 1
            return []
        when_ms = self._ms(when)
        user = 0
        if index == self._uu and event.user and self._distinct_on:
            user = _user_hash(event.user)
        hit = (when_ms << _TIME_SHIFT) | (user << _USER_SHIFT) | index
        tracked = self._tracked
        old = tracked.get(key)
        if old is None:
            hits = [hit]
            tracked[key] = hit
            if len(tracked) > self.bancfg.max_tracked:
                tracked.popitem(last=False)
                self._counters["evicted"] += 1
        else:
            hits = _hits(old)
            # Lines of several logs interleave out of time order: hits stay sorted by time
            # (the top bits), and windows end at the newest hit's log time.
            bisect.insort(hits, hit)
            hits = self._pruned_hits(hits, hits[-1] >> _TIME_SHIFT)
            tracked[key] = _pack(hits)
            tracked.move_to_end(key)
        return self._check(key, hits, now, event.ip)

    def _pruned_hits(self, hits: list[int], now_ms: int) -> list[int]:
        find_cut = now_ms - self._find_ms
        distinct_cut = now_ms - self._distinct_ms
        kept: list[int] = []
        seen_users: set[int] = set()
        # Newest first, so that of old user-unknown hits only the latest per user name is kept.
        for h in reversed(hits):
            t = h >> _TIME_SHIFT
            if t > find_cut:
                kept.append(h)
            elif t > distinct_cut and (h & _KIND_MASK) == self._uu:
                user = (h >> _USER_SHIFT) & _USER_MASK
                if user and user not in seen_users:
                    seen_users.add(user)
                    kept.append(h)
        kept.reverse()
        return kept

    def _check(self, key: int, hits: list[int], now: float, ip: str) -> list[Effect]:
        # Windows in log time: they end at the newest hit, not at the clock.
        now_ms = hits[-1] >> _TIME_SHIFT
        find_cut = now_ms - self._find_ms
        score = 0.0
        counts: dict[int, int] = {}
        users: set[int] = set()
        for h in hits:
            index = h & _KIND_MASK
            t = h >> _TIME_SHIFT
            if t > find_cut:
                score += self._weights.get(index, 0.0)
                counts[index] = counts.get(index, 0) + 1
            if index == self._uu and self._distinct_on:
                user = (h >> _USER_SHIFT) & _USER_MASK
                if user and t > now_ms - self._distinct_ms:
                    users.add(user)
        by_score = score >= self.bancfg.maxretry - _EPS
        by_users = self._distinct_on and len(users) >= self.bancfg.distinct_users
        if not (by_score or by_users):
            return []
        net = self._key_net(key)
        self._tracked.pop(key, None)   # counting starts afresh after this ban (or refusal)
        reason = {self._kind_names[i]: n for i, n in sorted(counts.items())}
        if by_users and not by_score:
            reason["distinct-users"] = len(users)
        if self._protected.overlaps_range(*self._key_range(key)):
            narrow = self.narrowest_unprotected(ip)
            if narrow is None:
                self._counters["ignored_protected"] += 1
                return []
            # A protected address shares the offender network: ban a narrower one than
            # refuse silently; the reason records the prefix it was narrowed from.
            self._counters["bans_narrowed"] += 1
            reason[PREFIX_FALLBACK] = self._v4_prefix if ":" not in net else self._v6_prefix
            net = narrow
        wider, _inside = self._nesting(net)
        if wider is not None:          # a manual ban already covers it: nothing to add
            return []
        return self._add_ban(net, now, score, reason, "auto", None)

    def score(self, ip: str) -> float:
        """Current score of the offender network of this IP (for logwatchctl and tests)."""
        key = self._ip_key(ip)
        value = self._tracked.get(key) if key is not None else None
        if value is None:
            return 0.0
        cut = self._ms(self.clock()) - self._find_ms
        return sum(self._weights.get(h & _KIND_MASK, 0.0)
                   for h in _hits(value) if (h >> _TIME_SHIFT) > cut)

    def tracked_hits(self, ip: str) -> int:
        """How many hits are remembered for this IP's offender network (memory accounting)."""
        key = self._ip_key(ip)
        value = self._tracked.get(key) if key is not None else None
        return 0 if value is None else len(_hits(value))

    def is_tracked(self, ip: str) -> bool:
        key = self._ip_key(ip)
        return key is not None and key in self._tracked
