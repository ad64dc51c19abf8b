"""The metrics and status page (services/web.py serves them): what other parts plug in.

METRICS: providers of Prometheus metric families, read at scrape time from the control
commands (never one series per IP or user). PANELS: the status page's boxes, in registration
order. A part adds its metrics and its panel as one module + a register() line each; a panel
whose provider is not registered shows "not enabled". Names reserved for the parts to come
are in RESERVED (HACKING, "Metrics and the status page")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logwatch.registry import Registry

# The control-command handler: {"cmd": ...} -> {"ok": ..., ...} (services/commands.py).
Query = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MetricProvider:
    """collect(query, status) -> Prometheus metric families (prometheus_client.core.*Family);
    status is the daemon's status snapshot of this scrape (one per scrape, shared)."""

    name: str
    collect: Callable[[Query, dict[str, Any]], Iterable[Any]]


@dataclass(frozen=True)
class PanelContext:
    """What a panel renders from: the query, this request's status snapshot, the plot span,
    the search/paging parameters, and the CSRF token of the session (None: read-only)."""

    query: Query
    status: dict[str, Any]
    span: str
    params: dict[str, str]
    csrf: str | None
    now: float


@dataclass(frozen=True)
class Panel:
    """A box of the status page: render(ctx) -> HTML (every log-derived text escaped);
    `needs`: the METRICS provider it shows, "not enabled" while that is not registered."""

    name: str
    title: str
    render: Callable[[PanelContext], str]
    needs: str | None = None
    wide: bool = False


METRICS: Registry[MetricProvider] = Registry("metric provider")
PANELS: Registry[Panel] = Registry("status panel")

# Metric names the policy, accounting and risk parts export (their providers' names in
# brackets; web/parts.py), fixed so that dashboards can be written against them.
RESERVED = {
    "logwatchd_policy_verdicts_total": "counter {rule,action} (policy)",
    "logwatchd_quota_hits_total": "counter {quota} (policy)",
    "logwatchd_suspended_accounts": "gauge (risk)",
    "logwatchd_messages_total": "counter {direction=sent|received} (accounting)",
}

# Changes the page may ask for (POST /action, with the token and the CSRF token): form name ->
# (the control command, the request field the form's "target" goes in). The risk part adds
# ("unsuspend", "user").
ACTIONS: Registry[tuple[str, str]] = Registry("page action")
ACTIONS.register("unban", ("unban", "ip"))
ACTIONS.register("revoke", ("revoke", "ip"))
