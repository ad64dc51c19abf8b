"""Issue 17, scenario 1: a login logged on node A lets the client relay through a real Postfix
that reads the shared PostgreSQL store with the shipped pgsql: table (node B's set-up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleet_helpers import fleet, login, pgsql_table
from netns import wait_until
from pgserver import postgres_server
from postfix_helpers import postfix_instance, try_relay

CLIENT = "127.0.0.5"          # the SMTP client's address (Postfix listens on 127.0.0.1)
ALLOWED, DENIED = 250, 554

pytestmark = pytest.mark.needs("root", "ip", "postfix", "postmap")


def _grant_rows(pg, ip: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return pg.sql("SELECT node, expires_at FROM grants WHERE ip = %s", (ip,))


def test_login_on_node_a_relays_through_postfix_of_node_b(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg:
        with fleet(pg, tmp_path / "nodes", names=("a",), firewall="none") as nodes:
            table = pgsql_table(pg, tmp_path / "logwatchd-grants.cf")
            with postfix_instance(table) as postfix:
                assert try_relay(postfix, CLIENT).code == DENIED
                node_a, _ns = nodes["a"]
                node_a.append(login(CLIENT))
                assert wait_until(lambda: _grant_rows(pg, CLIENT), timeout=10), \
                    node_a.stderr()
                assert _grant_rows(pg, CLIENT)[0][0] == "a"     # the deciding node
                probe = try_relay(postfix, CLIENT)
                assert probe.code == ALLOWED, f"{probe}\n{postfix.maillog()[-2000:]}"
                # Another client has no grant; an expired grant answers nothing.
                assert try_relay(postfix, "127.0.0.6").code == DENIED
                # logwatchctl grants names the deciding node.
                out = node_a.ctl("grants")
                assert out.returncode == 0, out.stderr
                header, row = out.stdout.splitlines()[:2]
                assert header.split()[-1] == "NODE" and row.split()[-1] == "a", out.stdout
                pg.sql("UPDATE grants SET expires_at = 1 WHERE ip = %s", (CLIENT,))
                assert try_relay(postfix, CLIENT).code == DENIED
