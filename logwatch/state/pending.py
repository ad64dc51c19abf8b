"""Store writes that failed to commit (disk full), merged until a retry succeeds: grants,
bans and their removals are per-key upserts and deletes, so the last one of each key wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from logwatch.engine.model import Ban, Grant


@dataclass
class PendingWrites:
    """Everything the store lacks compared with the engine, since the first failed commit."""

    grants: dict[str, Grant] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    bans: dict[str, Ban] = field(default_factory=dict)
    lifted: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.grants or self.revoked or self.bans or self.lifted)

    def merge(self, grants: dict[str, Grant], revoked: Any, bans: dict[str, Ban],
              lifted: Any) -> None:
        """Add one batch; a later batch overrides an earlier one key by key."""
        for ip in revoked:
            self.grants.pop(ip, None)
            self.revoked.add(ip)
        for ip, grant in grants.items():
            self.revoked.discard(ip)
            self.grants[ip] = grant
        for net in lifted:
            self.bans.pop(net, None)
            self.lifted.add(net)
        for net, ban in bans.items():
            self.lifted.discard(net)
            self.bans[net] = ban

    def write(self, store: Any, offender_rows: Any) -> None:
        """Apply to the store in the caller's transaction; offender_rows(nets) gives the ban
        history of the banned nets as it is now."""
        if self.revoked:
            store.delete_grants(self.revoked)
        if self.grants:
            store.put_grants(self.grants.values())
        if self.lifted:
            store.delete_bans(self.lifted)
        if self.bans:
            store.put_bans(self.bans.values())
            store.put_offenders(offender_rows(list(self.bans)))
