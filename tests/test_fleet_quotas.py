"""Issue 17, quota counters shared across the fleet: a quota of N per period is enforced
fleet-wide (two real logwatchd nodes on one PostgreSQL, spoken to over their policy sockets);
the peers' rows replace, never add twice (units)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from fleet_helpers import node_settings
from netns import wait_until
from pgserver import postgres_server
from test_policy_daemon import PolicyClient, free_port

from logwatch.engine.policy import PolicyRequest
from logwatch.engine.policy.quotas import QuotaCheck, QuotaSpec
from logwatch.state.policystore import PolicyStore

QUOTA = {"name": "user-rcpt", "key": "sasl_username", "count": "recipients", "limit": 5,
         "period": "10m", "action": "defer"}


def _ask(c: PolicyClient, instance: str, n: int) -> str:
    return c.ask(client_address="192.0.2.5", sasl_username="carol", instance=instance,
                 recipient=f"r{n}@example.org")


@pytest.mark.needs("root")
def test_a_quota_is_enforced_across_the_fleet(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg:
        nodes, ports = {}, {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            ports[name] = free_port()
            settings = node_settings(pg, name, "none", {
                "policy": {"listen": f"inet:127.0.0.1:{ports[name]}", "s25r": "off"}})
            d = DaemonProc(tmp_path / name, settings)
            d.settings["quotas"] = [QUOTA]
            d.write_config()
            nodes[name] = d
        try:
            for d in nodes.values():
                d.start()
            a = PolicyClient(f"inet:127.0.0.1:{ports['a']}")
            b = PolicyClient(f"inet:127.0.0.1:{ports['b']}")
            for n in range(3):
                assert _ask(a, "A1", n) == "action=DUNNO"
            # Within the propagation delay (A writes every 0.5 s, B reads every 0.5 s)
            # B knows A's 3: 2 more are allowed there, not 5.
            assert wait_until(lambda: nodes["b"].req(cmd="status")["policy"]["quota_peers"]
                              == ["a"], timeout=10), nodes["b"].stderr()[-2000:]
            time.sleep(1.5)
            assert [_ask(b, "B1", n) for n in (3, 4)] == ["action=DUNNO"] * 2
            assert _ask(b, "B1", 9).startswith("action=DEFER_IF_PERMIT 4.7.1 Quota user-rcpt")
            # And A learns B's 2: its 4th is over the fleet's 5 too.
            time.sleep(1.5)
            assert _ask(a, "A2", 7).startswith("action=DEFER_IF_PERMIT")
            rows = pg.sql("SELECT node, counts FROM policy_quota_counts ORDER BY node")
            assert [r[0] for r in rows] == ["a", "b"], rows
            a.close()
            b.close()
        finally:
            for d in nodes.values():
                if d.proc and d.proc.poll() is None:
                    d.stop(signal.SIGTERM)


def _req(instance: str, rcpt: str) -> PolicyRequest:
    return PolicyRequest({"protocol_state": "RCPT", "sasl_username": "carol",
                          "client_address": "192.0.2.5", "instance": instance,
                          "recipient": rcpt})


def test_peer_rows_replace_and_an_emptied_row_clears() -> None:
    now = 1_000_000.0
    q = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 3, 60.0)])
    peer = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 3, 60.0)])
    assert peer.decide(_req("P", "x@y"), now, True) is None
    assert peer.decide(_req("P", "z@y"), now, True) is None
    rows = [("p1", *r) for r in peer.take_dirty()]
    assert q.put_peer_rows(rows) == 1 and q.put_peer_rows(rows) == 1     # twice: once
    assert q.decide(_req("L", "a@y"), now, True) is None                 # 2 + 1
    assert q.decide(_req("L", "b@y"), now, True) is not None             # 2 + 2 > 3
    assert q.put_peer_rows([("p1", "u", "carol", 10.0, "1" + ",9" * 12)]) == 0  # period
    assert q.put_peer_rows([("p1", "u", "carol", 5.0, "1,2")]) == 0              # malformed
    assert q.put_peer_rows([("p1", "u", "carol", 60.0 / 12, "")]) == 1   # emptied
    assert q.decide(_req("L", "b@y"), now, True) is None


@pytest.mark.needs("root")
def test_peer_quota_rows_by_node_and_mark(tmp_path: Path) -> None:
    from logwatch.state.store import Store

    with postgres_server() as pg:
        a, b = Store(url=pg.url(), node="a"), Store(url=pg.url(), node="b")
        try:
            with a.transaction():
                PolicyStore(a).put_quota_counts([("u", "carol", 5.0, "1,2")], now=10.0)
            with b.transaction():
                PolicyStore(b).put_quota_counts([("u", "carol", 5.0, "1,1")], now=20.0)
            assert PolicyStore(a).load_quota_counts() == [("u", "carol", 5.0, "1,2")]
            assert PolicyStore(a).peer_quota_counts({}, 1.0) == [
                ("b", "u", "carol", 5.0, "1,1", 20.0)]
            assert PolicyStore(a).peer_quota_counts({"b": 20.0}, 1.0) != []    # the margin
            assert PolicyStore(a).peer_quota_counts({"b": 21.5}, 1.0) == []
        finally:
            a.close()
            b.close()
