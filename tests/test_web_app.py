"""The web app's routes, escaping, login/CSRF rules and paged tables (logwatch/web/app.py,
panels.py, services/tables.py), against the real command table over a small engine."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from logwatch.daemon.status import BanReasons
from logwatch.engine.model import Ban, Grant
from logwatch.services.commands import Actions, Commands
from logwatch.services.tables import PageCache, answer_table
from logwatch.web import METRICS, PANELS, Panel
from logwatch.web.app import LOGIN_FAILURES_PER_MINUTE, SERIES_TTL, WebApp
from logwatch.web.http import Request
from logwatch.web.svg import bar_chart, line_chart

EVIL = "<script>alert('x')</script>"
TOKEN = "t" * 24


class Engine:
    """What the table and manual commands read and call: bans, grants, offenders(), unban."""

    def __init__(self, bans: int = 0) -> None:
        self.bans = {f"10.0.{i // 256}.{i % 256}/32": Ban(
            f"10.0.{i // 256}.{i % 256}/32", since=1000.0 + i, expires_at=None, score=5,
            reason={"user-unknown": 5} if i % 2 else {"auth-failed": 3, "user-unknown": 1})
            for i in range(bans)}
        self.grants = {"192.0.2.5": Grant("192.0.2.5", EVIL, "pop3", 10.0, 99999.0)}
        self.calls: list[tuple[str, str]] = []
        self.accounts = Accounts(self.calls)

    def offenders(self, limit: int | None,
                  scan: int | None = None) -> tuple[list[dict[str, Any]], int]:
        views = [{"ip": "203.0.113.9", "score": 4.0, "threshold": 5.0,
                  "reasons": {"user-unknown": 4}, "distinct_users": 2, "last_seen": 50.0}]
        return views[:limit], 1

    def unban(self, ip: str) -> list[Any]:
        self.calls.append(("unban", ip))
        return ["lifted"] if ip + "/32" in self.bans else []


class Accounts:
    """engine.accounts as the "accounts" and "unsuspend" commands use it (engine/accounts.py)."""

    def __init__(self, calls: list[tuple[str, str]]) -> None:
        self.calls = calls

    def view(self, limit: int | None) -> dict[str, Any]:
        return {"accounts": [], "total": 0, "threshold": 100.0, "window": 3600.0,
                "suspended": [{"user": EVIL, "since": 1.0, "expires": 2.0, "score": 120.0,
                               "why": {}, "offences": 1, "source": "auto"}]}

    def unsuspend(self, user: str) -> list[Any]:
        self.calls.append(("unsuspend", user))
        return ["lifted"]


def status() -> dict[str, Any]:
    return {"version": "t", "uptime": 5.0, "lines_read": 3, "grants": 1, "bans": 2,
            "lag": 0.5, "lag_bytes": 0, "files": [{"path": f"/var/log/{EVIL}", "lines": 3}],
            "errors": [{"time": 1.0, "message": f"source: {EVIL}"}], "events": {},
            "actions": {}, "config": "/etc/logwatchd/secret-path.yaml"}


def make_app(token: str | None = None, bans: int = 3,
             parts: bool = False) -> tuple[WebApp, Engine, list[Any]]:
    """parts: the status says account risk and accounting are on (their panels render)."""
    engine = Engine(bans)
    applied: list[Any] = []
    series = {"ok": True, "step": 60, "start": 0, "points": 3,
              "series": {"events.login": [1.0, 2.0, 0.0], f"events.{EVIL}": [0.0, 1.0, 1.0]},
              "top": [[f"sender:{EVIL}", 7.0], ["sender:bob", 3.0]]}
    on = {"risk": {"suspensions": 1}, "accounting": {"open": 2, "delivered": 5}} if parts else {}
    commands = Commands(engine, Actions(status=lambda: {**status(), **on}, apply=applied.extend,
                                        reload=lambda: (True, ""), series=lambda req: series))
    clock = [100.0]
    app = WebApp(commands, token, lambda: clock[0])
    return app, engine, applied


def get(app: WebApp, path: str, query: dict[str, str] | None = None,
        cookie: str = "") -> Any:
    return app(Request("GET", path, query or {}, {"cookie": cookie} if cookie else {}))


def post(app: WebApp, path: str, form: str, headers: dict[str, str] | None = None) -> Any:
    return app(Request("POST", path, {}, headers or {}, form.encode()))


def test_log_derived_text_is_escaped_everywhere_on_the_page() -> None:
    app, _, _ = make_app()
    page = get(app, "/").body.decode()
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 4   # user,
    # file, error, plot legend
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/page.js" defer>']


def test_json_has_its_content_type_and_no_config_path() -> None:
    app, _, _ = make_app()
    r = get(app, "/api/status")
    assert r.content_type == "application/json"
    assert "config" not in json.loads(r.body)
    r = get(app, "/api/table", {"table": "grants"})
    assert json.loads(r.body)["rows"][0]["user"] == EVIL     # JSON escapes by its syntax
    assert get(app, "/api/table", {"table": "nope"}).status == 400
    assert get(app, "/api/table", {"limit": "x"}).status == 400


def test_routes_static_assets_and_errors() -> None:
    app, _, _ = make_app()
    assert get(app, "/healthz").status == 200
    css = get(app, "/static/style.css")
    assert css.status == 200 and css.content_type.startswith("text/css")
    assert get(app, "/static/../app.py").status == 404
    assert get(app, "/nowhere").status == 404
    assert post(app, "/", "").status == 405
    assert get(app, "/action").status == 405


def test_a_foreign_host_name_is_refused_against_dns_rebinding() -> None:
    app, _, _ = make_app()
    for host, status in (("127.0.0.1:9189", 200), ("[::1]:9189", 200), ("localhost:9189", 200),
                         ("", 200), ("evil.example:9189", 403), ("evil.example", 403)):
        assert app(Request("GET", "/healthz", {}, {"host": host})).status == status, host
    named = WebApp(app.query, None, lambda: 0.0, host="mail.example.org")
    assert named(Request("GET", "/healthz", {}, {"host": "MAIL.example.org:9189"})).status == 200


def test_read_only_without_a_token() -> None:
    app, engine, _ = make_app(token=None)
    page = get(app, "/").body.decode()
    assert "read-only" in page and 'action="/action"' not in page
    assert post(app, "/action", "cmd=unban&target=10.0.0.1").status == 403
    assert post(app, "/login", "token=anything").status == 403
    assert engine.calls == []


def login(app: WebApp) -> tuple[str, str]:
    r = post(app, "/login", f"token={TOKEN}")
    assert r.status == 303
    cookie = dict(r.headers)["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    sid = cookie.split(";")[0]
    page = get(app, "/", cookie=sid).body.decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert TOKEN not in page
    return sid, csrf


def test_a_change_needs_the_session_and_its_csrf_token() -> None:
    app, engine, applied = make_app(token=TOKEN)
    assert 'action="/action"' not in get(app, "/").body.decode()     # not logged in
    assert post(app, "/login", "token=wrong-token-0000000000").status == 403
    sid, csrf = login(app)
    # Another site's form carries the cookie (if a browser sent it) but not the CSRF token.
    assert post(app, "/action", "cmd=unban&target=10.0.0.1", {"cookie": sid}).status == 403
    assert post(app, "/action", f"cmd=unban&target=10.0.0.1&csrf={csrf}x",
                {"cookie": sid}).status == 403
    assert post(app, "/action", f"cmd=unban&target=10.0.0.1&csrf={csrf}").status == 403
    assert engine.calls == []
    r = post(app, "/action", f"cmd=unban&target=10.0.0.1&csrf={csrf}", {"cookie": sid})
    assert r.status == 303 and engine.calls == [("unban", "10.0.0.1")] and applied
    assert post(app, "/action", f"cmd=flush&target=x&csrf={csrf}", {"cookie": sid}).status == 400
    post(app, "/logout", f"csrf={csrf}", {"cookie": sid})
    assert post(app, "/action", f"cmd=unban&target=10.0.0.2&csrf={csrf}",
                {"cookie": sid}).status == 403


def test_a_script_sends_the_token_in_a_header() -> None:
    app, engine, _ = make_app(token=TOKEN)
    r = post(app, "/action", "cmd=unban&target=10.0.0.1",
             {"authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and json.loads(r.body)["ok"] is True
    assert post(app, "/action", "cmd=unban&target=10.0.0.1",
                {"authorization": "Bearer nope"}).status == 403


def test_failed_logins_are_limited() -> None:
    app, _, _ = make_app(token=TOKEN)
    for _ in range(LOGIN_FAILURES_PER_MINUTE):
        assert post(app, "/login", "token=bad").status == 403
    r = post(app, "/login", f"token={TOKEN}")
    assert r.status == 403 and b"too many" in r.body


def test_tables_are_paged_and_searched_server_side() -> None:
    engine = Engine(bans=1000)
    page = answer_table(engine, {"table": "bans", "offset": 0, "limit": 10})
    assert page["total"] == 1000 and len(page["rows"]) == 10
    assert page["rows"][0]["ip"] == "10.0.3.231/32"        # newest first
    second = answer_table(engine, {"table": "bans", "offset": 10, "limit": 10})
    assert second["rows"][0]["since"] == page["rows"][-1]["since"] - 1
    found = answer_table(engine, {"table": "bans", "q": "10.0.1.17/"})
    assert [r["ip"] for r in found["rows"]] == ["10.0.1.17/32"] and found["total"] == 1
    assert answer_table(engine, {"table": "bans", "limit": 10**9})["limit"] == 500
    for bad in ({"q": 5}, {"q": "x" * 101}, {"offset": -1}, {"limit": True}):
        assert not answer_table(engine, {"table": "bans", **bad})["ok"]
    offenders = answer_table(engine, {"table": "offenders"})
    assert offenders["rows"][0]["ip"] == "203.0.113.9" and offenders["total"] == 1


def test_the_newest_bans_page_is_kept_until_the_bans_change() -> None:
    engine = Engine(bans=100)
    clock = [0.0]
    cache = PageCache(lambda: clock[0])
    first = answer_table(engine, {"table": "bans", "limit": 5}, cache)
    engine.bans["10.0.0.5/32"].since = 10**9      # renewed in place: not seen at once ...
    assert answer_table(engine, {"table": "bans", "limit": 5}, cache) == first
    clock[0] += PageCache.BANS_TTL + 1             # ... but after the TTL
    assert answer_table(engine, {"table": "bans", "limit": 5}, cache)["rows"][0]["ip"] == \
        "10.0.0.5/32"
    engine.bans["10.9.9.9/32"] = Ban("10.9.9.9/32", since=10**10, expires_at=None)
    got = answer_table(engine, {"table": "bans", "limit": 5}, cache)
    assert got["rows"][0]["ip"] == "10.9.9.9/32" and got["total"] == 101     # a new ban: at once
    found = answer_table(engine, {"table": "bans", "q": "10.0.0.7/"}, cache)
    assert [r["ip"] for r in found["rows"]] == ["10.0.0.7/32"]              # searches: never cached
    ranked = answer_table(engine, {"table": "offenders"}, cache)
    engine.offenders = lambda limit, scan=None: ([], 0)    # type: ignore[method-assign]
    assert answer_table(engine, {"table": "offenders"}, cache) == ranked
    clock[0] += PageCache.OFFENDERS_TTL + 1
    assert answer_table(engine, {"table": "offenders"}, cache)["total"] == 0


def test_plot_data_is_read_at_most_every_few_seconds() -> None:
    asked: list[dict[str, Any]] = []

    def query(req: dict[str, Any]) -> dict[str, Any]:
        asked.append(req)
        return {"ok": True, "series": {}, "step": 60, "start": 0, "points": 0}

    clock = [1000.0]
    app = WebApp(query, None, lambda: clock[0])
    for _ in range(3):
        assert get(app, "/api/series", {"span": "day", "prefix": "events."}).status == 200
    assert len(asked) == 1
    get(app, "/api/series", {"span": "hour", "prefix": "events."})
    assert len(asked) == 2                       # another request: read
    clock[0] += SERIES_TTL + 1
    get(app, "/api/series", {"span": "day", "prefix": "events."})
    assert len(asked) == 3
    clock[0] -= 3600                             # the clock set back: read again, ...
    get(app, "/api/series", {"span": "day", "prefix": "events."})
    assert len(asked) == 4
    get(app, "/api/series", {"span": "day", "prefix": "events."})
    assert len(asked) == 4                       # ... then kept again


def test_the_page_links_pages_and_keeps_the_other_parameters() -> None:
    app, _, _ = make_app(bans=60)
    page = get(app, "/", {"span": "day", "bans_page": "1", "bans_q": "10.0."}).body.decode()
    assert 'id="bans-total">60 bans' in page and "page 2 of 4" in page
    assert "bans_page=2" in page and "span=day" in page and 'value="10.0."' in page


def test_live_bans_are_counted_by_reason_as_they_come_and_go() -> None:
    engine = Engine(bans=10)
    counts = BanReasons()
    counts.reset(engine.bans.values())
    assert counts.counts == {"user-unknown": 5, "auth-failed": 5}
    counts.lift("10.0.0.1/32")
    counts.lift("10.0.0.1/32")                      # lifted twice: counted once
    counts.add(Ban("10.0.0.2/32", 1.0, None, 0, {}, source="manual"))   # replaces
    counts.add(Ban("10.9.0.0/32", 1.0, None, 2, {"relay-denied": 1, "rejected": 3}))
    assert counts.counts == {"user-unknown": 4, "auth-failed": 4, "manual": 1, "rejected": 1}


def test_plots_are_svg_with_escaped_labels() -> None:
    svg = line_chart({"a": [1, 2, 3], EVIL: [0, 0, 1]}, 0, 60, "t<")
    assert svg.count("<polyline") == 2 and "<script" not in svg and "t&lt;" in svg
    assert "nothing counted yet" in line_chart({}, 0, 60, "t")
    bars = bar_chart([(EVIL, 3.0), ("b", 1.0)], "x")
    assert bars.count('class="bar"') == 2 and "<script" not in bars


def section(page: str, name: str) -> str:
    return re.search(rf'<section id="panel-{name}".*?</section>', page).group(0)


def test_a_part_that_is_off_or_absent_shows_not_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _, _ = make_app()
    page = get(app, "/").body.decode()
    for name in ("suspended", "messages", "senders", "verdicts"):
        assert "not enabled" in section(page, name), name
    assert "accounting.enabled" in section(page, "messages")
    assert "policy.listen" in section(page, "verdicts")
    monkeypatch.delitem(METRICS._entries, "risk")
    page = get(app, "/").body.decode()
    assert "no risk metrics provider is registered" in section(page, "suspended")
    assert [p.name for p in PANELS][:2] == ["overview", "sources"]
    assert [p.name for p in PANELS][-4:] == ["suspended", "messages", "senders", "verdicts"]


def test_suspended_accounts_and_top_senders_with_accounting_on() -> None:
    app, engine, _ = make_app(token=TOKEN, parts=True)
    page = get(app, "/").body.decode()
    assert "&lt;script&gt;" in section(page, "suspended") and "<script>alert" not in page
    senders = section(page, "senders")
    assert senders.count('class="bar"') == 2 and "&lt;script&gt;" in senders
    assert section(page, "messages").count("<polyline") == 2
    sid, csrf = login(app)
    r = post(app, "/action", f"cmd=unsuspend&target=alice&csrf={csrf}", {"cookie": sid})
    assert r.status == 303 and engine.calls == [("unsuspend", "alice")]


def test_a_broken_panel_does_not_take_the_page_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from logwatch.web import panels

    def boom(ctx: Any) -> str:
        raise RuntimeError("x")

    monkeypatch.setitem(PANELS._entries, "overview",
                        Panel("overview", "at a glance", boom))
    app, _, _ = make_app()
    page = get(app, "/").body.decode()
    assert "panel failed: RuntimeError" in page and 'id="panel-bans"' in page
    assert panels.esc("<") == "&lt;"
