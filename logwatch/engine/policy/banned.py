"""Banned client: a client inside a live ban net of the engine gets policy.banned_action."""

from __future__ import annotations

from typing import Any

from logwatch.engine.policy.request import PolicyRequest


class BannedCheck:
    """Asks the engine's read-only banned_net() (O(1) for offender-sized bans)."""

    def __init__(self, context: Any, action: str) -> None:
        self.context = context      # its engine is read per request (a reload replaces it)
        self.action = action

    def decide(self, req: PolicyRequest, now: float, commit: bool) -> Any:
        from logwatch.engine.policy import Verdict

        ip = req.client_address
        engine = self.context.engine
        if ip is None or engine is None or engine.banned_net(ip) is None:
            return None
        return Verdict("banned", self.action)


def build(policy: Any, quotas: Any, context: Any) -> BannedCheck | None:
    if not policy.banned_action:
        return None
    return BannedCheck(context, policy.banned_action)
