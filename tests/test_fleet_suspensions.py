"""Issue 17, account risk across the fleet: a SASL ID logging in from 4 networks on node A and
4 others on node B is suspended (each alone stays under the score) and the suspension is in
both nodes' check_sasl_access tables and answered by the shipped pgsql: table; unsuspend,
`logwatchctl suspend` and expiry on one node reach the other."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from fleet_helpers import node_settings, pgsql_table
from netns import wait_until
from pgserver import postgres_server

pytestmark = pytest.mark.needs("root", "postmap")

HOLD = "HOLD suspended by logwatchd (compromised?)"
VICTIM = "victim@example.org"


def auth_line(user: str, ip: str, n: int) -> str:
    return (f"{time.strftime('%b %e %H:%M:%S')} mx1 postfix/submission/smtpd[{2100 + n}]: "
            f"4Bx7Yq{n:05d}z: client=unknown[{ip}], sasl_method=PLAIN, sasl_username={user}")


def postmap_q(d: DaemonProc, spec: str, key: str) -> str:
    out = subprocess.run(["postmap", "-q", key, spec], capture_output=True, text=True,
                         env=d.env(), timeout=30, check=False)
    return out.stdout.strip()


def test_risk_adds_up_and_suspensions_reach_every_node(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg:
        nodes: dict[str, DaemonProc] = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            d = DaemonProc(tmp_path / name, node_settings(pg, name, "none", {"accounting": {
                "enabled": True, "stats_log": None,
                "sasl_access_map": f"hash:{tmp_path / name / 'sasl'}"}}))
            d.sasl = f"hash:{tmp_path / name / 'sasl'}"
            nodes[name] = d
        a, b = nodes["a"], nodes["b"]
        try:
            a.start()
            b.start()

            def held(d: DaemonProc, user: str) -> bool:
                return postmap_q(d, d.sasl, user) == HOLD

            # 4 networks each: 3 * 5 + 3 * 10 = 45 per node alone; 7 * 5 + 7 * 10 = 105 for
            # the fleet (accounting.suspend_score 100).
            a.append(*(auth_line(VICTIM, f"198.51.{i}.7", i) for i in range(4)))
            b.append(*(auth_line(VICTIM, f"203.0.{i}.9", 10 + i) for i in range(4)))
            assert wait_until(lambda: held(a, VICTIM) and held(b, VICTIM), timeout=20), \
                (a.stderr()[-2000:], b.stderr()[-2000:])
            assert b.req(cmd="status")["fleet"]["risk_received"] >= 4
            table = pgsql_table(pg, tmp_path / "sasl.cf", "logwatchd-sasl-access.cf")
            assert postmap_q(a, table, VICTIM) == HOLD
            assert postmap_q(a, table, VICTIM.upper()) == HOLD
            assert postmap_q(a, table, "nobody@example.org") == ""

            # unsuspend on B lifts it on A (and in the shared table).
            out = b.ctl("unsuspend", VICTIM)
            assert out.returncode == 0, out.stderr
            assert wait_until(lambda: not held(a, VICTIM), timeout=10), a.stderr()[-2000:]
            assert postmap_q(a, table, VICTIM) == ""

            # A manual suspension on A reaches B; a short one expires on both.
            assert a.ctl("suspend", "bob@example.org").returncode == 0
            assert wait_until(lambda: held(b, "bob@example.org"), timeout=10), \
                b.stderr()[-2000:]
            assert b.ctl("suspend", "eve@example.org", "--for", "3s").returncode == 0
            assert wait_until(lambda: held(a, "eve@example.org"), timeout=10)
            assert wait_until(lambda: not held(a, "eve@example.org")
                              and not held(b, "eve@example.org"), timeout=15)
            assert held(a, "bob@example.org") and held(b, "bob@example.org")
        finally:
            for d in nodes.values():
                if d.proc and d.proc.poll() is None:
                    d.stop(signal.SIGTERM)


def test_peer_risk_items_round_trip_and_hostile_ones_are_skipped() -> None:
    from types import SimpleNamespace as NS

    from logwatch.daemon.fleetrisk import MAX_DOMAINS, parse_item, risk_items

    rcpts = [NS(address=f"u{i}@D{i % 3}.example", dsn="5.1.1" if i < 2 else "2.0.0")
             for i in range(5)]
    msg = NS(sasl_user="Bob@example.org", client_ip="192.0.2.7", done_time=100.0,
             recipients=rcpts)
    (item,) = risk_items(records=[msg])
    kind, rec = parse_item(item)
    assert kind == "m" and rec.sasl_user == "Bob@example.org" and len(rec.recipients) == 5
    assert sorted(r.dsn[:1] for r in rec.recipients) == ["2", "2", "2", "5", "5"]
    assert {r.address.split("@")[1] for r in rec.recipients} == \
        {"d0.example", "d1.example", "d2.example"}
    assert parse_item(["l", 5.0, "bob", "192.0.2.7"]) == ("l", ("bob", "192.0.2.7", 5.0))
    for bad in (["l", 5.0, "bob x", "192.0.2.7"], ["l", 5.0, "#bob", ""],
                ["l", float("nan"), "bob", ""], ["l", True, "bob", ""],
                ["j", 5.0, "bob", "192.0.2.7; rm"], ["m", 5.0, "bob", "", 2, 2, 1, []],
                ["m", 5.0, "bob", "", 10**6, 0, 0, []],
                ["m", 5.0, "bob", "", 1, 0, 0, ["d"] * (MAX_DOMAINS + 1)],
                ["m", 5.0, "bob", "", 1, 0, 0, [7]], ["x", 5.0, "bob", ""], "junk", None,
                ["l", 5.0, "u" * 300, ""]):
        assert parse_item(bad) is None, bad


def test_adopted_suspensions_are_checked_and_carry_their_offences() -> None:
    from logwatch.engine.accounts import AccountBook, RiskSettings
    from logwatch.engine.model import Suspension

    now = [1000.0]
    book = AccountBook(RiskSettings(enabled=True, never_suspend=("boss@example.org",)),
                       clock=lambda: now[0])
    rows = [Suspension("bob@example.org", 990.0, 2000.0, 120.0, {}, 3, "auto"),
            Suspension("boss@example.org", 990.0, 2000.0, 120.0, {}, 1, "auto"),
            Suspension("Eve@example.org", 990.0, 2000.0, 120.0, {}, 1, "auto"),
            Suspension("old@example.org", 900.0, 950.0, 120.0, {}, 1, "auto")]
    assert [s.user for s in book.adopt_suspensions(rows)] == ["bob@example.org"]
    assert book.adopt_suspensions(rows) == []                 # the same row: nothing new
    assert book.history["bob@example.org"][0] == 3            # a repeat here grows from 3
    now[0] = 2001.0
    assert [e.user for e in book.sweep()] == ["bob@example.org"]
    assert book.drop_suspensions(["bob@example.org"]) == []
