"""The built-in panels of the status page, registered in PANELS in display order (the policy,
accounting and risk parts' panels follow, from web/parts.py). Every value from a log or a
client goes through html.escape (esc)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from logwatch.web import METRICS, PANELS, Panel, PanelContext
from logwatch.web.svg import line_chart

PAGE_ROWS = 15


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def link(params: dict[str, str], **changes: Any) -> str:
    """This page's URL with some parameters changed (escaped for an attribute)."""
    merged = {**params, **{k: str(v) for k, v in changes.items()}}
    return esc("/?" + urlencode({k: v for k, v in merged.items() if v not in ("", None)}))


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; the cells are HTML already (escaped by the caller)."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}" class="empty">none</td></tr>'
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def failed(answer: dict[str, Any]) -> str:
    """A panel's body when its control command answered an error."""
    return f'<p class="error">{esc(answer.get("error"))}</p>'


def action_form(ctx: PanelContext, cmd: str, ip: str, label: str) -> str:
    if ctx.csrf is None:
        return ""
    return (f'<form method="post" action="/action" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(ctx.csrf)}">'
            f'<input type="hidden" name="cmd" value="{esc(cmd)}">'
            f'<input type="hidden" name="target" value="{esc(ip)}">'
            f'<button type="submit" class="act">{esc(label)}</button></form>')


# -- state at a glance ----------------------------------------------------------------------

def _overview(ctx: PanelContext) -> str:
    st = ctx.status
    items = [("version", st.get("version")), ("uptime", ago(st.get("uptime"))),
             ("lines read", st.get("lines_read")), ("live grants", st.get("grants")),
             ("live bans", st.get("bans")), ("lag", ago(st.get("lag"))),
             ("dry run", "yes" if st.get("dry_run") else "no"),
             ("firewall", st.get("firewall_backend"))]
    return "<dl class=\"kv\">" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>"
                                         for k, v in items) + "</dl>"


def _sources(ctx: PanelContext) -> str:
    rows = [[esc(f.get("path")), esc(f.get("lines", 0)), esc(f.get("skipped_long", 0)),
             esc(f.get("rotations", 0)), "missing" if f.get("missing") else "ok"]
            for f in ctx.status.get("files", [])]
    lag = (f"<p>lag: {esc(ago(ctx.status.get('lag')))}, "
           f"{esc(ctx.status.get('lag_bytes') or 0)} bytes unread</p>")
    return lag + table(["source", "lines", "skipped", "rotations", "state"], rows)


def _errors(ctx: PanelContext) -> str:
    errors = list(reversed(ctx.status.get("errors", [])))[:10]
    return table(["time", "error"], [[esc(when(e.get("time"))), esc(e.get("message"))]
                                     for e in errors])


# -- plots ----------------------------------------------------------------------------------

def plot(ctx: PanelContext, req: dict[str, Any], title: str) -> str:
    """A line chart of the series the request names (\"names\" or \"prefix\") over ctx.span."""
    answer = ctx.query({"cmd": "series", "span": ctx.span, **req})
    if not answer.get("ok"):
        return failed(answer)
    series = answer["series"]
    if "prefix" in req:
        series = {k.removeprefix(req["prefix"]): v for k, v in series.items()}
    unit = f"per {answer['step'] // 60} min" if answer["step"] < 3600 else \
        f"per {answer['step'] // 3600} h"
    return line_chart(series, answer["start"], answer["step"], title, unit)


def _events_plot(ctx: PanelContext) -> str:
    return plot(ctx, {"prefix": "events."}, "events by kind")


def _bans_plot(ctx: PanelContext) -> str:
    return plot(ctx, {"names": ["bans", "unbans", "grants"]}, "bans and grants")


# -- tables ---------------------------------------------------------------------------------

def _paged(ctx: PanelContext, name: str, head: list[str], row: Any) -> str:
    q = ctx.params.get(f"{name}_q", "")[:100]
    try:
        page = max(0, int(ctx.params.get(f"{name}_page", "0")))
    except ValueError:
        page = 0
    answer = ctx.query({"cmd": "table", "table": name, "q": q, "offset": page * PAGE_ROWS,
                        "limit": PAGE_ROWS})
    if not answer.get("ok"):
        return failed(answer)
    total = answer["total"]
    pages = max(1, (total + PAGE_ROWS - 1) // PAGE_ROWS)
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in ctx.params.items() if k not in (f"{name}_q", f"{name}_page"))
    search = (f'<form method="get" action="/" class="search">{hidden}'
              f'<input type="search" name="{name}_q" id="{name}-q" value="{esc(q)}" '
              f'placeholder="search {name}"><button type="submit" id="{name}-search">search'
              f"</button></form>")
    nav = [f'<span class="count" id="{name}-total">{total} {esc(name)}</span>',
           f"<span>page {page + 1} of {pages}</span>"]
    if "scanned" in answer:
        nav.insert(1, f"<span>(ranked among the {answer['scanned']:,} most recently seen)</span>")
    if page > 0:
        nav.append(f'<a href="{link(ctx.params, **{f"{name}_page": page - 1})}">previous</a>')
    if page + 1 < pages:
        nav.append(f'<a href="{link(ctx.params, **{f"{name}_page": page + 1})}" '
                   f'id="{name}-next">next</a>')
    rows = [row(ctx, r) for r in answer["rows"]]
    return search + table(head, rows, f"data {name}") + '<p class="nav">' + " ".join(nav) + "</p>"


def _ban_row(ctx: PanelContext, r: dict[str, Any]) -> list[str]:
    expires = "permanent" if r["expires"] is None else when(r["expires"])
    return [esc(r["ip"]), esc(r["reason"]), esc(f"{r['score']:g}"), esc(when(r["since"])),
            esc(expires), esc(r["offences"]), action_form(ctx, "unban", r["ip"], "unban")]


def _grant_row(ctx: PanelContext, r: dict[str, Any]) -> list[str]:
    return [esc(r["ip"]), esc(r["user"]), esc(r["service"]), esc(when(r["since"])),
            esc(when(r["expires"])), action_form(ctx, "revoke", r["ip"], "revoke")]


def _offender_row(ctx: PanelContext, r: dict[str, Any]) -> list[str]:
    reasons = ", ".join(f"{k}:{v}" for k, v in sorted(r.get("reasons", {}).items()))
    return [esc(r["ip"]), esc(f"{r['score']:g} / {r['threshold']:g}"), esc(reasons),
            esc(r.get("distinct_users")), esc(when(r.get("last_seen")))]


def _bans(ctx: PanelContext) -> str:
    return _paged(ctx, "bans", ["ip", "reason", "score", "since", "expires", "offences", ""],
                  _ban_row)


def _grants(ctx: PanelContext) -> str:
    return _paged(ctx, "grants", ["ip", "user", "service", "since", "expires", ""], _grant_row)


def _offenders(ctx: PanelContext) -> str:
    return _paged(ctx, "offenders", ["ip", "score / threshold", "reasons", "distinct users",
                                     "last seen"], _offender_row)


# -- the registry ----------------------------------------------------------------------------

def not_enabled(panel: Panel) -> str:
    return (f'<p class="disabled">not enabled (needs the {esc(panel.needs)} part: no '
            f"{esc(panel.needs)} metrics provider is registered)</p>")


def provider_present(panel: Panel) -> bool:
    return panel.needs is None or panel.needs in METRICS


for _panel in (
    Panel("overview", "at a glance", _overview),
    Panel("sources", "sources and lag", _sources),
    Panel("events", "events", _events_plot),
    Panel("activity", "bans and grants over time", _bans_plot),
    Panel("bans", "live bans", _bans, wide=True),
    Panel("grants", "live grants", _grants, wide=True),
    Panel("offenders", "offenders close to a ban", _offenders, wide=True),
    Panel("errors", "last errors", _errors, wide=True),
):
    PANELS.register(_panel.name, _panel)
