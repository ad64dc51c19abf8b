"""Log time with a real daemon (issue 12 point 16): a login read late grants from its own time,
an old one (--from-start, downtime) not at all, and failures days apart do not ban."""

from __future__ import annotations

import shutil
import time

import pytest
from daemon_harness import DaemonProc

pytestmark = pytest.mark.skipif(shutil.which("postmap") is None, reason="needs postfix")


def stamp(ago: float = 0.0) -> str:
    return time.strftime("%b %e %H:%M:%S", time.localtime(time.time() - ago))


def courier_login(ip: str, ago: float = 0.0) -> str:
    return (f"{stamp(ago)} mx pop3d: LOGIN, user=alice, ip=[::ffff:{ip}], port=[4000], "
            f"protocol=POP3")


def unknown_user(ip: str, user: str, ago: float) -> str:
    return (f"{stamp(ago)} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
            f"550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<spam@example.net> to=<{user}@example.org> proto=ESMTP "
            f"helo=<guess>")


def test_grants_run_from_the_login_time_and_old_lines_do_not_act(tmp_path):
    d = DaemonProc(tmp_path, {"relay": {"grace": 1800},
                              "bans": {"maxretry": 3, "findtime": 600, "distinct_users": 0}})
    try:
        d.start()
        d.append(courier_login("192.0.2.31", ago=600),       # 10 minutes late: 20 left
                 courier_login("192.0.2.32", ago=7200),      # grace long over: nothing
                 *[unknown_user("203.0.113.31", f"u{i}", ago=3 * 3600 - i * 3600)
                   for i in range(3)])                       # 3 failures an hour apart
        deadline = time.monotonic() + 10
        while d.req(cmd="status")["lines_read"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        grants = d.req(cmd="grants")["grants"]
        assert [g["ip"] for g in grants] == ["192.0.2.31"], d.stderr()
        left = grants[0]["expires"] - time.time()
        assert 1100 < left <= 1200, left
        assert d.req(cmd="bans")["bans"] == []
    finally:
        d.stop()
