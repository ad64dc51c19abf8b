"""The state engine: relay grants after logins, offender scoring and bans. Pure: no I/O, clock injected.

The engine only returns effects (logwatch.engine.model); the daemon applies them to the Postfix map,
the firewall and the store. Grants and scores run on the line's own time (see event_time for the
clock-skew rules); bans and expiries on the injected clock, the time the daemon acts.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.model import Ban, BanAdded, BanLifted, Effect, Grant, GrantAdded, GrantRevoked
from logwatch.engine.queries import EngineQueries
from logwatch.engine.whitelist import LOOPBACK, NetSet, Whitelist, net_text, parse_net, range_text
from logwatch.parsing.events import AUTH, LOGIN, USER_UNKNOWN, Event, normalize_ip

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

PRUNE_INTERVAL = 60.0        # seconds between sweeps that only forget stale offenders
# A line may be dated this far ahead of our clock (another host's syslog, a clock step) and keep
# its time; beyond that it is taken as "now" and counted: a bogus date must not pin anything.
LOG_CLOCK_SKEW = 300.0

PREFIX_FALLBACK = "prefix-fallback"   # Ban.reason key: the offender prefix a ban was narrowed from
_KEEP = object()             # reconfigure(): "leave this setting as it is"


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


class Engine(EngineQueries):
    """Grants, bans and offender scores; every method returns the effects the daemon must apply."""

    def __init__(
        self,
        relay: RelayConfig,
        bans: BanConfig,
        *,
        whitelist: Whitelist | None = None,
        mynetworks: Sequence[str] = (),
        own_addresses: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.grants: dict[str, Grant] = {}
        self.bans: dict[str, Ban] = {}
        self.whitelist = whitelist if whitelist is not None else Whitelist()
        self._mynetworks = NetSet(mynetworks)
        self._own = NetSet(own_addresses)
        # offender key -> packed hits, least recently seen first (popitem(last=False) evicts).
        self._tracked: OrderedDict[int, int] = OrderedDict()
        self._epoch_ms = round(clock() * 1000)
        self._last_prune = clock()
        # ban history, for growth and permanent bans: net -> [bans so far, time of the last]
        self._history: OrderedDict[str, list[float]] = OrderedDict()
        self._kind_index: dict[str, int] = {}
        self._kind_names: list[str] = []
        # Expiry heap of (expires_at, seq, "g"|"b", key); stale entries are skipped lazily.
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._counters: dict[str, int] = dict.fromkeys(
            ("events", "grants_added", "grants_refreshed", "grants_excluded", "grants_expired",
             "bans_added", "bans_lifted", "bans_expired", "ignored_banned", "ignored_protected",
             "ignored_invalid", "evicted", "pruned", "time_future", "time_invalid",
             "grants_stale", "ignored_stale", "bans_narrowed"), 0)
        self._configure(relay, bans)
        self._rebuild_protected()

    # -- configuration -------------------------------------------------------

    def _configure(self, relay: RelayConfig, bans: BanConfig) -> None:
        self.relay = relay
        self.bancfg = bans
        self._services = frozenset(s.lower() for s in relay.services)
        self._exclude = NetSet(relay.exclude)
        self._no_grant = self._mynetworks | self._exclude
        self._uu = self._kind(USER_UNKNOWN)      # registered first: always a valid index
        self._weights: dict[int, float] = {}
        for kind, weight in bans.weights.items():
            index = self._kind(kind)
            # Only _KIND_BITS worth of kinds fit in a packed hit; more are ignored, not crashed on.
            if weight and weight > 0 and index >= 0:
                self._weights[index] = float(weight)
        self._v4_prefix = bans.ipv4_prefix
        self._v6_prefix = bans.ipv6_prefix
        self._v4_mask = ((1 << 32) - 1) ^ ((1 << (32 - bans.ipv4_prefix)) - 1)
        self._v6_mask = ((1 << 128) - 1) ^ ((1 << (128 - bans.ipv6_prefix)) - 1)
        self._find_ms = int(bans.findtime * 1000)
        self._distinct_on = bans.distinct_users > 0 and bans.distinct_window > 0
        self._distinct_ms = int(bans.distinct_window * 1000) if self._distinct_on else 0
        self._horizon_ms = max(self._find_ms, self._distinct_ms)

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

    def _rebuild_protected(self) -> None:
        self._protected = self.whitelist.nets | self._mynetworks | self._own | NetSet(LOOPBACK)
        self._reindex_bans()

    def _reindex_bans(self) -> None:
        # Bans shaped like an offender key are found by key; others (manual /24, /128 ...) by range.
        self._banned_keys: set[int] = set()
        self._odd_bans: list[tuple[int, int, int]] = []
        for net in self.bans:
            key = self._net_key(net)
            if key is not None:
                self._banned_keys.add(key)
            else:
                self._odd_bans.append(parse_net(net))

    def reconfigure(self, relay: RelayConfig, bans: BanConfig, mynetworks=_KEEP,
                    own_addresses=_KEEP) -> list[Effect]:
        """Apply new settings (SIGHUP); grants, bans and scores stay (scores reset if prefixes change)."""
        old_prefixes = (self._v4_prefix, self._v6_prefix)
        if mynetworks is not _KEEP:
            self._mynetworks = NetSet(mynetworks)
        if own_addresses is not _KEEP:
            self._own = NetSet(own_addresses)
        self._configure(relay, bans)
        if old_prefixes != (self._v4_prefix, self._v6_prefix):
            # Keys of another prefix length mean nothing now; counting again is the safe choice.
            self._tracked.clear()
        while len(self._tracked) > max(bans.max_tracked, 0):
            self._tracked.popitem(last=False)
            self._counters["evicted"] += 1
        self._rebuild_protected()
        return self._drop_excluded_grants() + self._lift_protected_bans()

    def set_whitelist(self, wl: Whitelist) -> list[Effect]:
        """Install a new whitelist; bans now touching it are lifted, scores are kept."""
        self.whitelist = wl
        self._rebuild_protected()
        return self._lift_protected_bans()

    def _drop_excluded_grants(self) -> list[Effect]:
        effects: list[Effect] = []
        for ip in [ip for ip in self.grants if self._no_grant.contains(ip)]:
            del self.grants[ip]
            effects.append(GrantRevoked(ip, "excluded"))
        return effects

    def _lift_protected_bans(self) -> list[Effect]:
        nets = [net for net in self.bans if self._protected.overlaps(net)]
        return self._lift(nets, "whitelisted")

    # -- keys ----------------------------------------------------------------

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

    # -- expiry heap -----------------------------------------------------------

    def _push(self, expires_at: float | None, kind: str, key: str) -> None:
        if expires_at is None:
            return
        self._seq += 1
        heapq.heappush(self._heap, (expires_at, self._seq, kind, key))
        # Refreshes leave stale entries behind; rebuild before they outweigh the live ones.
        if len(self._heap) > 2 * (len(self.grants) + len(self.bans)) + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        heap = [(g.expires_at, 0, "g", ip) for ip, g in self.grants.items()]
        heap += [(b.expires_at, 0, "b", net) for net, b in self.bans.items()
                 if b.expires_at is not None]
        heapq.heapify(heap)
        self._heap = heap

    def _live(self, entry: tuple[float, int, str, str]) -> bool:
        expires_at, _, kind, key = entry
        item = self.grants.get(key) if kind == "g" else self.bans.get(key)
        return item is not None and item.expires_at == expires_at

    def next_deadline(self) -> float | None:
        """When sweep() next has work: a grant or ban expiry, or stale offenders to forget.

        None: nothing will ever expire. Forgetting offenders is rate-limited to once per
        PRUNE_INTERVAL, so a stream of new offenders does not wake the daemon every millisecond.
        """
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        deadline = heap[0][0] if heap else None
        if self._tracked:
            newest = _newest_time(self._tracked[next(iter(self._tracked))])
            forget = (newest - _BIAS + self._epoch_ms + self._horizon_ms) / 1000
            forget = max(forget, self._last_prune + PRUNE_INTERVAL)
            deadline = forget if deadline is None else min(deadline, forget)
        return deadline

    def sweep(self) -> list[Effect]:
        """Expire grants and bans whose time has come, and forget offenders not seen for long."""
        now = self.clock()
        effects: list[Effect] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            _, _, kind, key = entry
            if kind == "g":
                del self.grants[key]
                self._counters["grants_expired"] += 1
                effects.append(GrantRevoked(key, "expired"))
            else:
                self._counters["bans_expired"] += 1
                effects.extend(self._lift([key], "expired"))
        self._prune(now)
        self._last_prune = now
        return effects

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

    # -- events ----------------------------------------------------------------

    def handle(self, event: Event) -> list[Effect]:
        """Effects of one parsed log event (a grant, a ban, or nothing)."""
        self._counters["events"] += 1
        kind = event.kind
        if kind == LOGIN or kind == AUTH:
            if not self.relay.enabled:
                return []
            if kind == LOGIN and (event.service or "").lower() not in self._services:
                return []
            if kind == AUTH and not self.relay.smtp_auth:
                return []
            ip = normalize_ip(event.ip)
            if ip is None:
                self._counters["ignored_invalid"] += 1
                return []
            if self._no_grant.contains(ip):
                self._counters["grants_excluded"] += 1
                return []
            return self._grant(ip, event.user, event.service, self.relay.grace, extend_only=True,
                               at=self.event_time(event))
        if not self.bancfg.enabled:
            return []
        index = self._kind_index.get(kind)
        if index is None:
            return []
        if index not in self._weights and not (index == self._uu and self._distinct_on):
            return []            # weight 0 costs no memory at all (unless user names count)
        return self._score(event, index)

    def event_time(self, event: Event, now: float | None = None) -> float:
        """The line's own time; one more than LOG_CLOCK_SKEW ahead of the clock (or unreadable)
        is taken as now and counted. Old times stay: each caller has its own age limit."""
        if now is None:
            now = self.clock()
        try:
            when = event.time.timestamp()
        except (AttributeError, ValueError, OverflowError, OSError):
            self._counters["time_invalid"] += 1
            return now
        if not when <= now + LOG_CLOCK_SKEW:       # also NaN
            self._counters["time_future"] += 1
            return now
        return when

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

    # -- bans ----------------------------------------------------------------

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
        key = self._net_key(net)
        if key is not None:
            self._banned_keys.add(key)
        else:
            self._odd_bans.append(parse_net(net))
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

    # -- grants ----------------------------------------------------------------

    def _grant(self, ip: str, user: str | None, service: str | None, duration: float,
               extend_only: bool, at: float | None = None) -> list[Effect]:
        now = self.clock()
        start = now if at is None else at
        expires_at = start + duration
        if expires_at <= now:
            # Grace runs from the login's own time: a replayed or late old login grants nothing.
            self._counters["grants_stale"] += 1
            return []
        old = self.grants.get(ip)
        if old is not None and extend_only:
            expires_at = max(expires_at, old.expires_at)
        grant = Grant(ip=ip, user=user, service=service, granted_at=start, expires_at=expires_at)
        self.grants[ip] = grant
        if old is None or old.expires_at != expires_at:
            self._push(expires_at, "g", ip)
        self._counters["grants_refreshed" if old else "grants_added"] += 1
        return [GrantAdded(replace(grant), refreshed=old is not None)]

    def grant(self, ip: str, duration: float | None = None, user: str | None = None,
              service: str = "manual") -> list[Effect]:
        """Manual grant (logwatchctl grant); ValueError for invalid, excluded or mynetworks IPs."""
        norm = normalize_ip(str(ip).strip())
        if norm is None:
            raise ValueError(f"{ip!r} is not an IP address")
        if self._no_grant.contains(norm):
            raise ValueError(f"{norm} is in mynetworks or relay.exclude; never granted")
        if duration is None:
            duration = self.relay.grace
        if not duration > 0 or math.isinf(duration):
            raise ValueError(f"grant duration must be positive and finite, not {duration}")
        return self._grant(norm, user, service, duration, extend_only=False)

    def revoke(self, ip: str) -> list[Effect]:
        """Withdraw a grant now; [] if the IP has none; ValueError if not an IP."""
        norm = normalize_ip(str(ip).strip())
        if norm is None:
            raise ValueError(f"{ip!r} is not an IP address")
        if self.grants.pop(norm, None) is None:
            return []
        return [GrantRevoked(norm, "revoked")]

    # -- persistence -------------------------------------------------------------

    def load(self, grants: list[Grant], bans: list[Ban],
             offenders: list[tuple[str, int, float]]) -> list[Effect]:
        """Restore state from the store; expired or no longer allowed entries come back as effects."""
        now = self.clock()
        effects: list[Effect] = []
        # The history is capped like the tracked offenders: the most recently banned are kept.
        for net, count, last in sorted(offenders, key=lambda row: row[2])[-self.bancfg.max_tracked:]:
            self._history[net] = [int(count), float(last)]
        for g in grants:
            ip = normalize_ip(g.ip)
            if ip is None or g.expires_at <= now:
                effects.append(GrantRevoked(g.ip, "expired"))
            elif self._no_grant.contains(ip):
                effects.append(GrantRevoked(g.ip, "excluded"))
            else:
                self.grants[ip] = replace(g, ip=ip)
                self._push(g.expires_at, "g", ip)
        for b in bans:
            if b.expires_at is not None and b.expires_at <= now:
                effects.append(BanLifted(b.net, "expired"))
                continue
            try:
                protected = self._protected.overlaps(b.net)
            except ValueError:
                effects.append(BanLifted(b.net, "expired"))
                continue
            if protected:
                effects.append(BanLifted(b.net, "whitelisted"))
                continue
            self.bans[b.net] = replace(b, reason=dict(b.reason))
            self._push(b.expires_at, "b", b.net)
        self._reindex_bans()
        return effects

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

    def score(self, ip: str) -> float:
        """Current score of the offender network of this IP (for logwatchctl and tests)."""
        key = self._ip_key(ip)
        value = self._tracked.get(key) if key is not None else None
        if value is None:
            return 0.0
        cut = self._ms(self.clock()) - self._find_ms
        return sum(self._weights.get(h & _KIND_MASK, 0.0)
                   for h in _hits(value) if (h >> _TIME_SHIFT) > cut)

    def is_protected(self, ip_or_net: str) -> bool:
        """Would the engine refuse to ban (any part of) this address or network?"""
        return self._protected.overlaps(ip_or_net)

    def tracked_hits(self, ip: str) -> int:
        """How many hits are remembered for this IP's offender network (memory accounting)."""
        key = self._ip_key(ip)
        value = self._tracked.get(key) if key is not None else None
        return 0 if value is None else len(_hits(value))

    def is_tracked(self, ip: str) -> bool:
        key = self._ip_key(ip)
        return key is not None and key in self._tracked

    def log_time_counts(self) -> dict[str, int]:
        """Lines whose own time was not used as is (see event_time), for logwatchctl status."""
        c = self._counters
        return {"future": c["time_future"], "unreadable": c["time_invalid"],
                "stale_logins": c["grants_stale"], "stale_failures": c["ignored_stale"]}

    def stats(self) -> dict:
        """Counters and sizes for logwatchctl status."""
        return {
            "grants": len(self.grants),
            "bans": len(self.bans),
            "permanent_bans": sum(1 for b in self.bans.values() if b.expires_at is None),
            "tracked": len(self._tracked),
            "max_tracked": self.bancfg.max_tracked,
            "history": len(self._history),
            "whitelist_entries": len(self.whitelist),
            "next_deadline": self.next_deadline(),
            **self._counters,
        }
