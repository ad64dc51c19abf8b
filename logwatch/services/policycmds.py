"""The policy service's control commands: `verdicts` (the audit) and `policy-test` (one
request's verdict without counting it)."""

from __future__ import annotations

import math
from typing import Any

from logwatch.parsing.events import normalize_ip

MAX_ATTRS = 200
MAX_LIMIT = 100_000


def policy_verdicts(policy: Any, req: dict[str, Any]) -> dict[str, Any]:
    """{"since": epoch seconds, "ip": IP, "user": SASL ID, "limit": N} -> the stored verdicts."""
    if policy is None or policy.cfg is None:
        return {"ok": False, "error": "verdicts: the policy service is not configured"}
    since, ip, user, limit = req.get("since"), req.get("ip"), req.get("user"), req.get("limit")
    if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)
                              or not math.isfinite(since)):
        return {"ok": False, "error": "verdicts: \"since\" must be a time in seconds"}
    if ip is not None:
        norm = normalize_ip(ip) if isinstance(ip, str) else None
        if norm is None:
            return {"ok": False, "error": f"verdicts: not an IP address: {ip!r}"}
        ip = norm
    if user is not None and not isinstance(user, str):
        return {"ok": False, "error": "verdicts: \"user\" must be a string"}
    if limit is None:
        limit = 1000
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LIMIT:
        return {"ok": False, "error": f"verdicts: \"limit\" must be 1..{MAX_LIMIT}"}
    rows = policy.verdicts(since, ip, user, limit)
    return {"ok": True, "verdicts": [r.as_json() for r in rows]}


def policy_test(policy: Any, req: dict[str, Any]) -> dict[str, Any]:
    """{"attrs": {name: value}} -> {"rule", "action"}; no counter changes."""
    if policy is None or policy.decider is None:
        return {"ok": False, "error": "policy-test: the policy service is not configured"}
    attrs = req.get("attrs")
    if (not isinstance(attrs, dict) or len(attrs) > MAX_ATTRS
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items())):
        return {"ok": False, "error": "policy-test: \"attrs\" must be a mapping of "
                                      f"at most {MAX_ATTRS} names to strings"}
    verdict = policy.test(attrs)
    return {"ok": True, "rule": verdict.rule, "action": verdict.action}
