"""Control commands: ONE table, command name -> handler. Read-only commands answer from engine
queries; the others call the explicit actions the daemon passes in, never its fields."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logwatch.engine.targets import check_ban, check_grant
from logwatch.parsing.events import normalize_ip
from logwatch.services.policycmds import policy_test, policy_verdicts
from logwatch.services.queries import answer_query
from logwatch.services.tables import PageCache, answer_table
from logwatch.util.duration import parse_duration

Reply = dict[str, Any]
Handler = Callable[[dict[str, Any]], Reply]

_NOTHING = {"ban": "not banned", "unban": "not banned",
            "grant": "not granted", "revoke": "no grant to revoke"}


def reason_text(reason: dict[str, int] | str | None) -> str:
    if not reason:
        return ""
    if isinstance(reason, str):
        return reason
    return ",".join(f"{k}:{v}" for k, v in sorted(reason.items()))


@dataclass
class Actions:
    """What commands may do besides reading the engine: the daemon's own entry points."""

    status: Callable[[], dict[str, Any]]            # a snapshot for `status`
    apply: Callable[[Iterable[Any]], None]          # effects through the effect table
    reload: Callable[[], tuple[bool, str]]
    changed: Callable[[], None] = lambda: None      # engine deadlines moved (manual commands)
    # A shared store: the deciding node of each ban or grant (kind "bans"/"grants"), and
    # the grants other nodes made (Grant, node); a local store gives nothing.
    nodes: Callable[[str], dict[str, str]] = lambda kind: {}
    fleet_grants: Callable[[], list[Any]] = lambda: []
    # `messages` (daemon/accounting.py Accounting.query); None while accounting is off
    messages: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    policy: Any = None                              # daemon/policyside.PolicySide
    series: Callable[[dict[str, Any]], dict[str, Any]] = \
        lambda req: {"ok": False, "error": "series: no store"}   # state/series.py read()


class Commands:
    """The control socket's handler: request -> reply through the table."""

    def __init__(self, engine: Any, actions: Actions) -> None:
        self.engine = engine
        self.actions = actions
        self.pages = PageCache()         # the status page's newest bans (tables.py)
        self.table: dict[str, Handler] = {
            "status": self._status, "bans": self._bans, "grants": self._grants,
            "reload": self._reload, "flush": self._flush,
            "offenders": self._query, "check": self._query, "messages": self._messages,
            # The status page's reads (services/web.py), also open to logwatchctl.
            "table": lambda req: answer_table(self.engine, req, self.pages),
            "series": lambda req: self.actions.series(req),
            **{cmd: self._manual for cmd in _NOTHING},
            "accounts": self._accounts, "suspend": self._suspension,
            "unsuspend": self._suspension,
            "verdicts": self._verdicts, "policy-test": self._policy_test,
        }

    def __call__(self, req: dict[str, Any]) -> Reply:
        handler = self.table.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r}"}
        return handler(req)

    def _status(self, req: dict[str, Any]) -> Reply:
        return {"ok": True, **self.actions.status()}

    def _bans(self, req: dict[str, Any]) -> Reply:
        nodes = self.actions.nodes("bans")
        return {"ok": True, "bans": [
            {"ip": b.net, "reason": reason_text(b.reason) or b.source,
             "score": b.score, "since": b.since, "expires": b.expires_at,
             "offences": b.offences, "source": b.source,
             **({"node": nodes.get(b.net)} if nodes else {})}
            for b in sorted(self.engine.bans.values(), key=lambda b: b.since)]}

    def _grants(self, req: dict[str, Any]) -> Reply:
        nodes = self.actions.nodes("grants")
        rows = [(g, nodes.get(g.ip)) for g in self.engine.grants.values()]
        mine = {g.ip for g, _node in rows}
        rows += [(g, node) for g, node in self.actions.fleet_grants() if g.ip not in mine]
        return {"ok": True, "grants": [
            {"ip": g.ip, "reason": f"{g.service or '?'} login {g.user or '?'}",
             "user": g.user, "service": g.service, "since": g.granted_at,
             "expires": g.expires_at, **({"node": node} if nodes else {})}
            for g, node in sorted(rows, key=lambda r: r[0].granted_at)]}

    def _reload(self, req: dict[str, Any]) -> Reply:
        ok, msg = self.actions.reload()
        return {"ok": ok, "message": msg} if ok else {"ok": False, "error": msg}

    def _flush(self, req: dict[str, Any]) -> Reply:
        effects = list(self.engine.flush())
        self.actions.apply(effects)
        return {"ok": True, "message": f"flushed: {len(effects)} ban(s) lifted"}

    def _messages(self, req: dict[str, Any]) -> Reply:
        if self.actions.messages is None:
            return {"ok": False, "error": "messages: accounting is off (accounting.enabled)"}
        return self.actions.messages(req)

    def _query(self, req: dict[str, Any]) -> Reply:
        return answer_query(self.engine, req)

    def _verdicts(self, req: dict[str, Any]) -> Reply:
        return policy_verdicts(self.actions.policy, req)

    def _policy_test(self, req: dict[str, Any]) -> Reply:
        return policy_test(self.actions.policy, req)

    def _manual(self, req: dict[str, Any]) -> Reply:
        """ban/unban/grant/revoke IP [for DURATION]: checked, then through the engine."""
        cmd, raw = req["cmd"], req.get("ip")
        if not isinstance(raw, str):
            return {"ok": False, "error": f"{cmd}: an \"ip\" string is required"}
        duration, refused = _for_duration(cmd, req)
        if refused:
            return refused
        ip: str | None = raw
        if cmd in ("grant", "revoke"):
            ip = normalize_ip(raw)
            if ip is None:
                return {"ok": False, "error": f"{cmd}: not an IP address: {raw!r}"}
        refused = check_grant(ip) if cmd == "grant" else check_ban(ip) if cmd == "ban" else None
        if refused:
            return {"ok": False, "error": f"{cmd}: {refused}"}
        op = {"ban": lambda: self.engine.ban(ip, duration), "unban": lambda: self.engine.unban(ip),
              "grant": lambda: self.engine.grant(ip, duration),
              "revoke": lambda: self.engine.revoke(ip)}[cmd]
        try:
            effects = list(op())
        except ValueError as exc:
            return {"ok": False, "error": f"{cmd}: {exc}"}
        if not effects:
            return {"ok": False, "error": f"{cmd}: {raw}: {_NOTHING[cmd]}"}
        self.actions.apply(effects)
        self.actions.changed()
        return {"ok": True, "message": f"{cmd} {raw}: done"}

    def _accounts(self, req: dict[str, Any]) -> Reply:
        """Top senders (score, counts, why) and the suspended IDs (engine/accounts.py)."""
        limit = req.get("limit", 20)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            return {"ok": False, "error": "accounts: \"limit\" must be a non-negative integer"}
        return {"ok": True, **self.engine.accounts.view(limit or None)}

    def _suspension(self, req: dict[str, Any]) -> Reply:
        """suspend USER [for DURATION] / unsuspend USER: through the engine and the table."""
        cmd, user = req["cmd"], req.get("user")
        if not isinstance(user, str):
            return {"ok": False, "error": f"{cmd}: a \"user\" string is required"}
        duration, refused = _for_duration(cmd, req)
        if refused:
            return refused
        accounts = self.engine.accounts
        if cmd == "suspend" and not accounts.settings.enabled:
            return {"ok": False, "error": "suspend: accounting is not enabled"}
        try:
            effects = list(accounts.suspend(user, duration) if cmd == "suspend"
                           else accounts.unsuspend(user))
        except ValueError as exc:
            return {"ok": False, "error": f"{cmd}: {exc}"}
        if not effects:
            return {"ok": False, "error": f"unsuspend: {user!r}: not suspended"}
        self.actions.apply(effects)
        self.actions.changed()
        return {"ok": True, "message": f"{cmd} {user.lower()}: done"}


def _for_duration(cmd: str, req: dict[str, Any]) -> tuple[float | None, Reply | None]:
    """The request's optional "for" as seconds (bounded: ten years at most), or its refusal."""
    raw = req.get("for")
    if raw is None:
        return None, None
    try:
        return parse_duration(raw), None
    except ValueError as exc:
        return None, {"ok": False, "error": f"{cmd}: \"for\" {exc}"}
