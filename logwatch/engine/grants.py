"""Relay grants: after a login (from its own log time), manual grants and revocations.
A mixin of Engine (logwatch.engine.core), which holds the state."""

from __future__ import annotations

import math
from dataclasses import replace

from logwatch.engine.model import Effect, Grant, GrantAdded, GrantRevoked
from logwatch.engine.state import EngineState
from logwatch.parsing.events import normalize_ip


class GrantBook(EngineState):
    """Grants and the manual grant/revoke commands (state lives in Engine)."""

    def _drop_excluded_grants(self) -> list[Effect]:
        effects: list[Effect] = []
        for ip in [ip for ip in self.grants if self._no_grant.contains(ip)]:
            del self.grants[ip]
            effects.append(GrantRevoked(ip, "excluded"))
        return effects

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
