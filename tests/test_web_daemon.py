"""The web listener of a real logwatchd: real state (bans through `logwatchctl ban`, a grant
from a log line with a hostile user name, 30 days of counts in its store), /metrics parsed by
prometheus_client, the JSON API, the token/CSRF flow over HTTP, slow clients, the recorder."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from webdaemon import HOSTILE_IP, HOSTILE_USER, TOKEN, WebDaemon

from logwatch.state import series
from logwatch.state.store import Store

pytestmark = pytest.mark.needs("postmap")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebDaemon]:
    w = WebDaemon(tmp_path)
    try:
        yield w.start()
    finally:
        w.stop()


def metric(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_metrics_page_and_api_from_real_state(web: WebDaemon) -> None:
    ips = web.populate(30)
    status, headers, body = web.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert metric(text, "logwatchd_active_bans", reason="manual", backend="none") == 30
    assert metric(text, "logwatchd_bans_total") == 30
    assert metric(text, "logwatchd_active_grants") == 1
    assert metric(text, "logwatchd_events_total", kind="login") == 1
    assert metric(text, "logwatchd_lines_read_total", source=str(web.proc.log)) == 1
    assert metric(text, "logwatchd_firewall_write_seconds_count") >= 30
    assert metric(text, "logwatchd_map_write_seconds_count") >= 1
    assert HOSTILE_IP not in text and ips[0] not in text       # never a series per address

    found = web.json(f"/api/table?table=bans&q={ips[16]}")
    assert [r["ip"] for r in found["rows"]] == [ips[16] + "/32"] and found["total"] == 1
    grants = web.json("/api/table?table=grants")
    assert grants["rows"][0]["user"] == HOSTILE_USER
    month = web.json("/api/series?span=month&names=bans,grants")
    assert month["points"] == 120 and sum(month["series"]["bans"]) > 0
    health = web.json("/healthz")
    assert health["ok"] is True

    status, headers, body = web.get("/")
    page = body.decode()
    assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert HOSTILE_USER not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page
    assert page.count("<polyline") >= 4


def test_a_rule_failing_its_self_test_at_reload_is_counted(tmp_path: Path) -> None:
    local = tmp_path / "rules.d"
    local.mkdir()
    w = WebDaemon(tmp_path / "d", settings={"rules": {"local_dir": str(local)}})
    w.start(prefill=False)
    try:
        (local / "site.yaml").write_text(
            "rules:\n  - id: site-x\n    kind: login\n    programs: [dovecot]\n"
            "    prefilter: 'Login:'\n    regex: 'Login: (?P<ip>[0-9.]+)'\n    samples:\n"
            "      - line: 'Nov 21 23:27:53 mail dovecot[1]: Login: 192.0.2.1'\n"
            "        expect: {kind: login, ip: 192.0.2.99}\n")
        mark = len(w.proc.stderr())
        w.proc.send(signal.SIGHUP)
        w.proc.wait_log("action=reload result=rejected", after=mark)
        text = w.get("/metrics")[2].decode()
        assert metric(text, "logwatchd_rule_selftest_failures_total") == 1
        assert metric(text, "logwatchd_errors_total") == 1
    finally:
        w.stop()


def test_changes_need_the_token_and_the_csrf_token(web: WebDaemon) -> None:
    ips = web.populate(2)
    target = ips[0]
    assert web.post("/action", {"cmd": "unban", "target": target})[0] == 403
    assert web.post("/login", {"token": "wrong" * 4})[0] == 403
    status, headers, _ = web.post("/login", {"token": TOKEN})
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    page = web.get("/", {"Cookie": cookie})[2].decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert TOKEN not in page
    # The cookie alone (what a forged cross-site form would carry) is not enough.
    assert web.post("/action", {"cmd": "unban", "target": target}, {"Cookie": cookie})[0] == 403
    status, _, _ = web.post("/action", {"cmd": "unban", "target": target, "csrf": csrf},
                            {"Cookie": cookie})
    assert status == 303
    banned = {b["ip"] for b in web.proc.req(cmd="bans")["bans"]}
    assert target + "/32" not in banned and ips[1] + "/32" in banned
    text = web.get("/metrics")[2].decode()
    assert metric(text, "logwatchd_active_bans", reason="manual", backend="none") == 1
    # A restart counts the bans it loads from the store.
    web.proc.stop()
    web.proc.start()
    text = web.get("/metrics")[2].decode()
    assert metric(text, "logwatchd_active_bans", reason="manual", backend="none") == 1
    status, _, body = web.post("/action", {"cmd": "revoke", "target": HOSTILE_IP},
                               {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["ok"] is True
    assert web.proc.req(cmd="status")["grants"] == 0


def test_account_risk_and_accounting_panels_of_a_real_daemon(tmp_path: Path) -> None:
    """accounting.enabled: the suspended accounts (unsuspend from the page), messages and top
    senders render; the policy service is off and says so."""
    w = WebDaemon(tmp_path, accounting=True)
    w.start()
    try:
        assert w.proc.req(cmd="suspend", user="mallory@example.org")["ok"]
        text = w.get("/metrics")[2].decode()
        assert metric(text, "logwatchd_suspended_accounts") == 1
        assert metric(text, "logwatchd_accounting_open_messages") == 0
        cookie = w.post("/login", {"token": TOKEN})[1]["Set-Cookie"].split(";")[0]
        page = w.get("/?span=day", {"Cookie": cookie})[2].decode()
        panels = {name: re.search(rf'<section id="panel-{name}".*?</section>', page).group(0)
                  for name in ("suspended", "messages", "senders", "verdicts")}
        assert "mallory@example.org" in panels["suspended"]
        assert "<polyline" in panels["messages"] and "<svg" in panels["senders"]
        assert "not enabled" in panels["verdicts"] and "panel failed" not in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, _, _ = w.post("/action", {"cmd": "unsuspend", "target": "mallory@example.org",
                                          "csrf": csrf}, {"Cookie": cookie})
        assert status == 303
        assert w.proc.req(cmd="accounts")["suspended"] == []
    finally:
        w.stop()


def test_a_slow_client_stalls_neither_the_page_nor_the_control_socket(web: WebDaemon) -> None:
    slow = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(20)]
    try:
        for s in slow:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")        # and never the blank line
        started = time.monotonic()
        assert web.get("/healthz")[0] == 200
        assert web.proc.req(cmd="status")["ok"]
        assert time.monotonic() - started < 2
    finally:
        for s in slow:
            s.close()


def test_the_recorder_stores_the_counts_at_stop(tmp_path: Path) -> None:
    w = WebDaemon(tmp_path, token=None)
    w.start(prefill=False)
    try:
        for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            w.proc.ctl("ban", ip)
    finally:
        w.stop()
    store = Store(tmp_path / "state" / "state.db")
    try:
        got = series.read(store, ["bans"], "hour", time.time())["series"]["bans"]
    finally:
        store.close()
    assert sum(got) == 3


def test_a_listen_address_in_use_is_a_start_error_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        w = WebDaemon(tmp_path)
        w.port = busy.getsockname()[1]
        w.proc.settings["web"]["listen"] = f"127.0.0.1:{w.port}"
        w.proc.write_config()
        w.proc.start(wait=False)
        try:
            assert w.proc.proc is not None
            w.proc.proc.wait(30)
            assert w.proc.proc.returncode != 0
            assert "web.listen (--web-listen)" in w.proc.stderr()
        finally:
            w.stop()
