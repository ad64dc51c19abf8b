"""Bans and suspensions other nodes decided (a shared store): held like the engine's own so
that they expire, show and protect the same way, but never stored again (their row is there)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from logwatch.engine.model import Ban, Suspension
from logwatch.engine.targets import check_ban


class FleetBans:
    """Engine mixin (state lives in the Engine): adopt and drop the shared table's bans."""

    bans: dict[str, Ban]
    clock: Any
    _protected: Any

    def adopt_bans(self, bans: Iterable[Ban]) -> list[Ban]:
        """Hold these rows; the bans new to this node are returned (for the firewall)."""
        now = self.clock()
        new: list[Ban] = []
        for b in bans:
            if b.expires_at is not None and b.expires_at <= now:
                continue
            try:
                if self._protected.overlaps(b.net):
                    continue   # whitelisted here: never in this node's firewall
            except ValueError:
                continue
            if check_ban(b.net) is not None:
                continue   # a row no logwatchd writes (/0, too wide): never enforced
            old = self.bans.get(b.net)
            if old == b:
                continue
            self.bans[b.net] = b   # a row just read: nobody else holds its reason dict
            self._push(b.expires_at, "b", b.net)   # type: ignore[attr-defined]
            if old is None:
                self._index_ban(b.net)   # type: ignore[attr-defined]  (BanBook's)
                new.append(b)
        return new

    def drop_bans(self, nets: Iterable[str]) -> list[str]:
        """Forget bans another node lifted; those this node held are returned."""
        dropped = []
        for net in nets:
            if self.bans.pop(net, None) is not None:
                self._unindex_ban(net)   # type: ignore[attr-defined]
                dropped.append(net)
        return dropped

    def covered_by_ban(self, ip: str) -> bool:
        """Is this address inside a ban this node holds? (Its hits need no announcing.)"""
        key = self._ip_key(ip)   # type: ignore[attr-defined]
        return key is not None and self._is_banned(key, ip)   # type: ignore[attr-defined]


class FleetSuspensions:
    """AccountBook mixin: adopt and drop the shared table's suspensions (a peer's decision,
    logwatchctl suspend on another node)."""

    suspensions: dict[str, Suspension]
    history: Any          # OrderedDict user -> [suspensions so far, time of the last]
    clock: Any
    _heap: list
    _never: frozenset

    def adopt_suspensions(self, rows: Iterable[Suspension]) -> list[Suspension]:
        """Hold these rows; those new or changed here are returned (for the table)."""
        from logwatch.engine.accounts import user_key, valid_user

        now = self.clock()
        out: list[Suspension] = []
        for s in rows:
            # A row is re-checked like a log line: only a valid, allowed key is enforced.
            if not valid_user(s.user) or s.user != user_key(s.user) or s.user in self._never:
                continue
            if not s.expires_at > now or self.suspensions.get(s.user) == s:
                continue
            self.suspensions[s.user] = s
            heapq.heappush(self._heap, (s.expires_at, s.user))
            out.append(s)
            # The row's count of offences: a repeat decided here grows from the fleet's.
            if s.source == "auto" and self.history.get(s.user, [0])[0] < s.offences:
                self.history[s.user] = [s.offences, s.since]
                self.history.move_to_end(s.user)
        return out

    def drop_suspensions(self, users: Iterable[str]) -> list[str]:
        """Forget suspensions another node lifted; those this node held are returned."""
        return [u for u in users if self.suspensions.pop(u, None) is not None]
