"""A real logwatchd serving the web listener, with real state: bans made through
`logwatchctl ban`, a grant from a log line whose user name is hostile HTML, and 30 days of
per-minute/hour counts written into its store before it starts (the series table, as the
daemon's own recorder writes it). Used by test_web_daemon.py, test_web_browser.py and the
bench."""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon_harness import DaemonProc

from logwatch.state import series
from logwatch.state.store import Store

TOKEN = "test-token-0123456789abcdef"
HOSTILE_USER = "<script>document.title='pwned';window.pwned=1</script>"
HOSTILE_IP = "192.0.2.55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def login_line(ip: str, user: str) -> str:
    return (f"{stamp()} mx dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4242, TLS, session=<a1b2c3d4>")


def prefill_series(state_dir: Path, now: float, days: int = 30) -> None:
    """Per-hour counts for `days` days and per-minute counts for the last day (made-up traffic
    with a daily rhythm) in the counts table, as the recorder would have left them."""
    store = Store(state_dir / "state.db")
    try:
        rows: list[tuple[str, int, int, float]] = []
        for step, span in ((series.HOUR, days * 86400), (series.MINUTE, 86400)):
            first = int(now - span) - int(now - span) % step
            for i, t in enumerate(range(first, int(now), step)):
                scale = step / 60
                day = 1 + math.sin(2 * math.pi * (t % 86400) / 86400)     # 0..2
                rows += [("events.user-unknown", step, t, round((6 + 3 * day + i % 5) * scale)),
                         ("events.login", step, t, round((1 + 2 * day) * scale)),
                         ("events.auth-failed", step, t, round((2 + i % 3) * scale)),
                         ("bans", step, t, round((0.3 + 0.2 * day) * scale + i % 2)),
                         ("grants", step, t, round((1 + 2 * day) * scale)),
                         # accounting's own series (engine/counts.py)
                         ("sent", step, t, round((4 + 3 * day) * scale)),
                         ("received", step, t, round((9 + 5 * day) * scale)),
                         ("sender:alice@example.org", step, t, round((2 + day) * scale)),
                         ("sender:bob@example.org", step, t, round((1 + day) * scale))]
        with store.transaction():
            store.db.executemany("INSERT INTO counts (series, step, t, value) "
                                 "VALUES (?, ?, ?, ?)", rows)
    finally:
        store.close()


class WebDaemon:
    """DaemonProc with web.listen on a free loopback port; get()/post() speak HTTP to it."""

    def __init__(self, base: Path, token: str | None = TOKEN,
                 settings: dict[str, Any] | None = None, accounting: bool = False) -> None:
        base.mkdir(parents=True, exist_ok=True)
        if accounting:          # account risk and accounting on, their files in base
            settings = {**(settings or {}), "accounting": {
                "enabled": True, "stats_log": str(base / "stats.log"),
                "sasl_access_map": f"hash:{base / 'sasl'}"}}
        self.port = free_port()
        web = {"listen": f"127.0.0.1:{self.port}", "token": token}
        self.proc = DaemonProc(base, {"web": web, **(settings or {})})
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, prefill: bool = True) -> WebDaemon:
        if prefill:
            prefill_series(self.proc.base / "state", time.time())
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()

    def get(self, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> Any:
        status, headers, body = self.get(path)
        assert headers["Content-Type"] == "application/json", headers
        return json.loads(body)

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              **(headers or {})})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def populate(self, bans: int = 30) -> list[str]:
        """Bans through `logwatchctl ban` and a grant of the hostile user; the banned IPs."""
        ips = [f"198.51.100.{i}" for i in range(1, bans + 1)]
        for ip in ips:
            out = self.proc.ctl("ban", ip)
            assert out.returncode == 0, out.stderr
        self.proc.append(login_line(HOSTILE_IP, HOSTILE_USER))
        deadline = time.monotonic() + 10
        while self.proc.req(cmd="status")["grants"] == 0:
            assert time.monotonic() < deadline, self.proc.stderr()
            time.sleep(0.05)
        return ips


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None
