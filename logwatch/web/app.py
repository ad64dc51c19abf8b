"""The web app: routes of the metrics and status listener, and who may change anything.

Read-only unless web.token is set. With a token, a change (POST /action) needs either the
header `Authorization: Bearer TOKEN` (scripts) or the session cookie of a login (POST /login
with the token) together with that session's CSRF token in the form. Nothing secret is ever
rendered: the token is compared, never echoed; sessions and CSRF tokens are random."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from logwatch.services.tables import PageCache
from logwatch.web import ACTIONS, PANELS, PanelContext, Query
from logwatch.web import panels as _panels  # noqa: F401  (registers the built-in panels)
from logwatch.web import parts as _parts  # noqa: F401  (then risk's, accounting's, policy's)
from logwatch.web.http import Request, Response
from logwatch.web.metrics import Metrics
from logwatch.web.panels import esc, not_enabled, provider_present

COOKIE = "lwd_session"
SESSION_TTL = 8 * 3600.0
MAX_SESSIONS = 32
LOGIN_FAILURES_PER_MINUTE = 10
STATIC = {"style.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
SPANS = ("hour", "day", "month")
SERIES_TTL = 10.0                # plot data is kept this long (the counts change each minute)
JSON = "application/json"


@dataclass
class Session:
    csrf: str
    expires: float


def _json(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, default=str).encode(), JSON)


def _text(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _redirect(to: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, b"", "text/plain", [("Location", to), *(headers or [])])


def static_file(name: str) -> bytes:
    return resources.files("logwatch.web").joinpath("static", name).read_bytes()


class WebApp:
    """Request -> Response; answers from the control commands (query) only."""

    def __init__(self, query: Query, token: str | None, clock: Callable[[], float],
                 host: str = "") -> None:
        self.query = query
        self.token = token
        self.host = host.lower()
        self.clock = clock
        self.metrics = Metrics(query)
        self.sessions: dict[str, Session] = {}
        self.series_cache = PageCache(clock, max_pages=64)
        self.failures: list[float] = []
        self.static = {name: static_file(name) for name in STATIC}
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/"): self.page, ("GET", "/metrics"): self.metrics_page,
            ("GET", "/healthz"): self.healthz, ("GET", "/api/status"): self.api_status,
            ("GET", "/api/table"): self.api_table, ("GET", "/api/series"): self.api_series,
            ("POST", "/login"): self.login, ("POST", "/logout"): self.logout,
            ("POST", "/action"): self.action,
        }

    def __call__(self, req: Request) -> Response:
        if not self._host_ok(req.headers.get("host", "")):
            return _text(403, "unexpected Host header")
        method = "GET" if req.method == "HEAD" else req.method
        if method == "GET" and req.path.startswith("/static/"):
            return self.static_asset(req.path.removeprefix("/static/"))
        handler = self.routes.get((method, req.path))
        if handler is None:
            if any(path == req.path for _, path in self.routes):
                return _text(405, "method not allowed")
            return _text(404, "not found")
        return handler(req)

    def _host_ok(self, host: str) -> bool:
        """An address, localhost or the configured host: a page fetched under another name
        is a DNS rebinding attempt (a web site reading the loopback page through the
        admin's browser)."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if not name or name in ("localhost", self.host):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    # -- read-only routes -------------------------------------------------------------------

    def static_asset(self, name: str) -> Response:
        if name not in self.static:
            return _text(404, "not found")
        return Response(200, self.static[name], STATIC[name],
                        [("Cache-Control", "max-age=3600")])

    def metrics_page(self, req: Request) -> Response:
        return Response(200, self.metrics.render(), self.metrics.content_type)

    def healthz(self, req: Request) -> Response:
        st = self.query({"cmd": "status"})
        if not st.get("ok"):
            return _json({"ok": False}, 503)
        return _json({"ok": True, "uptime": st.get("uptime"), "lag": st.get("lag")})

    def api_status(self, req: Request) -> Response:
        st = self.query({"cmd": "status"})
        st.pop("config", None)          # paths of the host are not the page's business
        return _json(st)

    def api_table(self, req: Request) -> Response:
        q = req.query
        try:
            offset, limit = int(q.get("offset", "0")), int(q.get("limit", "50"))
        except ValueError:
            return _json({"ok": False, "error": "offset and limit are integers"}, 400)
        answer = self.query({"cmd": "table", "table": q.get("table", "bans"),
                             "q": q.get("q", ""), "offset": offset, "limit": limit})
        return _json(answer, 200 if answer.get("ok") else 400)

    def api_series(self, req: Request) -> Response:
        q = req.query
        ask: dict[str, Any] = {"cmd": "series", "span": q.get("span", "hour")}
        if "prefix" in q:
            ask["prefix"] = q["prefix"]
        else:
            ask["names"] = [n for n in q.get("names", "").split(",") if n]
        answer = self.cached(ask)
        return _json(answer, 200 if answer.get("ok") else 400)

    def cached(self, req: dict[str, Any]) -> dict[str, Any]:
        """The query, with "series" answers kept SERIES_TTL seconds: the counts change once a
        minute, a page reloaded every 100 ms need not read them each time."""
        if req.get("cmd") != "series":
            return self.query(req)
        key = json.dumps(req, sort_keys=True, default=str)
        return self.series_cache.get((key,), SERIES_TTL, lambda: self.query(req))

    def page(self, req: Request) -> Response:
        session = self._session(req)
        span = req.query.get("span", "hour")
        span = span if span in SPANS else "hour"
        status = self.query({"cmd": "status"})
        ctx = PanelContext(self.cached, status, span, dict(req.query),
                           session.csrf if session else None, self.clock())
        boxes = []
        for panel in PANELS:
            try:
                body = panel.render(ctx) if provider_present(panel) else not_enabled(panel)
            except Exception as exc:   # one broken panel must not take the page down
                body = f'<p class="error">panel failed: {esc(type(exc).__name__)}</p>'
            boxes.append(f'<section id="panel-{esc(panel.name)}" class="panel'
                         f'{" wide" if panel.wide else ""}"><h2>{esc(panel.title)}</h2>'
                         f"{body}</section>")
        html = _layout(span, dict(req.query), "".join(boxes), self._login_box(session))
        return Response(200, html.encode())

    # -- authentication and changes -------------------------------------------------------

    def _session(self, req: Request) -> Session | None:
        sid = req.cookies().get(COOKIE, "")
        session = self.sessions.get(sid) if sid else None
        if session is not None and session.expires <= self.clock():
            del self.sessions[sid]
            return None
        return session

    def _token_ok(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(),
                                                              self.token.encode())

    def _login_box(self, session: Session | None) -> str:
        if self.token is None:
            return '<span class="mode">read-only (no web.token set)</span>'
        if session is not None:
            return (f'<form method="post" action="/logout" class="inline">'
                    f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'
                    f'<button type="submit" id="logout">log out</button></form>')
        return ('<form method="post" action="/login" class="inline">'
                '<input type="password" name="token" id="token" placeholder="token" '
                'autocomplete="current-password"><button type="submit" id="login">log in'
                "</button></form>")

    def login(self, req: Request) -> Response:
        now = self.clock()
        self.failures = [t for t in self.failures if t > now - 60]
        if self.token is None:
            return _text(403, "read-only: no web.token is set")
        if len(self.failures) >= LOGIN_FAILURES_PER_MINUTE:
            return _text(403, "too many failed logins; wait a minute")
        if not self._token_ok(req.form().get("token", "")):
            self.failures.append(now)
            return _text(403, "wrong token")
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[min(self.sessions, key=lambda s: self.sessions[s].expires)]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = Session(secrets.token_urlsafe(32), now + SESSION_TTL)
        cookie = f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_TTL)}"
        return _redirect("/", [("Set-Cookie", cookie)])

    def logout(self, req: Request) -> Response:
        session = self._session(req)
        if session is not None and hmac.compare_digest(req.form().get("csrf", ""),
                                                       session.csrf):
            self.sessions.pop(req.cookies().get(COOKIE, ""), None)
        return _redirect("/", [("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0")])

    def action(self, req: Request) -> Response:
        """unban/revoke (ACTIONS): bearer token, or session cookie + its CSRF token."""
        if self.token is None:
            return _text(403, "read-only: no web.token is set")
        form = req.form()
        auth = req.headers.get("authorization", "")
        by_header = auth.startswith("Bearer ") and self._token_ok(auth.removeprefix("Bearer "))
        session = self._session(req)
        by_session = session is not None and hmac.compare_digest(form.get("csrf", ""),
                                                                 session.csrf)
        if not (by_header or by_session):
            return _text(403, "forbidden: log in (and submit the page's own form)")
        name = form.get("cmd", "")
        if name not in ACTIONS:
            return _text(400, f"unknown action {name[:40]!r}")
        command, field = ACTIONS.get(name)
        answer = self.query({"cmd": command, field: form.get("target", "")})
        if by_header:
            return _json(answer, 200 if answer.get("ok") else 400)
        return _redirect("/") if answer.get("ok") else \
            _text(400, str(answer.get("error", "failed")))


def _layout(span: str, params: dict[str, str], body: str, login: str) -> str:
    from logwatch.web.panels import link

    spans = " ".join(f'<a href="{link(params, span=s)}" class="{"on" if s == span else ""}" '
                     f'id="span-{s}">{s}</a>' for s in SPANS)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>logwatchd status</title>"
            "<link rel=\"stylesheet\" href=\"/static/style.css\">"
            "<script src=\"/static/page.js\" defer></script></head><body>"
            f"<header><h1>logwatchd</h1><nav>plots: {spans}</nav>"
            f"<div class=\"auth\">{login}</div></header>"
            f"<main>{body}</main>"
            "<footer><a href=\"/metrics\">/metrics</a> · <a href=\"/api/status\">/api/status"
            "</a> · <a href=\"/healthz\">/healthz</a></footer></body></html>")
