"""Control-socket answers of the read-only commands `offenders` and `check` (engine queries)."""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 100


def answer_query(engine: Any, req: dict[str, Any]) -> dict[str, Any]:
    """{"cmd": "offenders", "limit": N} or {"cmd": "check", "ip": IP} -> a response object."""
    cmd = req["cmd"]
    if cmd == "offenders":
        limit = req.get("limit", DEFAULT_LIMIT)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):
            return {"ok": False, "error": 'offenders: "limit" must be a positive integer or null'}
        offenders, total = engine.offenders(limit)
        return {"ok": True, "offenders": offenders, "total": total}
    raw = req.get("ip")
    if not isinstance(raw, str):
        return {"ok": False, "error": 'check: an "ip" string is required'}
    try:
        return {"ok": True, **engine.verdict(raw)}
    except ValueError as exc:
        return {"ok": False, "error": f"check: {exc}"}
