"""Issue 17, scenario 2: three logwatchd nodes in three network namespaces share a real
PostgreSQL store; each has its own log and its own iptables. A guesser trying 2 names on each
node is banned on all three (scores add up to maxretry 5); a manual ban and unban on one node
reach the others' kernels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fleet_helpers import drops, fleet, unknown_user
from netns import wait_until
from pgserver import postgres_server

GUESSER = "198.51.100.77"

pytestmark = pytest.mark.needs("root", "ip", "iptables", "ip6tables")


def _everywhere(nodes, net: str, present: bool = True, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    return wait_until(lambda: all((net in drops(ns)) == present for _d, ns in nodes.values()),
                      timeout=timeout)


def test_split_guesser_is_banned_on_all_three(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg, fleet(pg, tmp_path) as nodes:
        for i, (proc, _ns) in enumerate(nodes.values()):
            proc.append(*[unknown_user(GUESSER, f"n{i}u{j}") for j in range(2)])
        assert _everywhere(nodes, f"{GUESSER}/32"), \
            {name: (drops(ns), proc.stderr()[-1500:]) for name, (proc, ns) in nodes.items()}
        rows = pg.sql("SELECT net, node FROM bans")
        assert [r[0] for r in rows] == [f"{GUESSER}/32"]
        assert rows[0][1] in nodes
        for _proc, ns in nodes.values():    # one DROP per kernel, no duplicates
            assert drops(ns).count(f"{GUESSER}/32") == 1
        # logwatchctl bans names the deciding node; status lists the peers.
        a = nodes["a"][0]
        listing = a.ctl("bans")
        assert listing.returncode == 0, listing.stderr
        header, row = listing.stdout.splitlines()[:2]
        assert header.split()[-1] == "NODE" and row.split()[-1] == rows[0][1], listing.stdout
        text = a.ctl("status").stdout
        assert "node:          a" in text and "store:         postgresql://" in text, text
        assert {p["node"] for p in a.req(cmd="status")["fleet"]["peers"]} == {"b", "c"}


def test_manual_ban_and_unban_reach_every_node(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg, fleet(pg, tmp_path) as nodes:
        a = nodes["a"][0]
        out = a.ctl("ban", "203.0.113.9")
        assert out.returncode == 0, out.stderr
        assert _everywhere(nodes, "203.0.113.9/32"), \
            {name: drops(ns) for name, (_p, ns) in nodes.items()}
        assert pg.sql("SELECT node FROM bans WHERE net = '203.0.113.9/32'") == [("a",)]
        out = nodes["c"][0].ctl("unban", "203.0.113.9")
        assert out.returncode == 0, out.stderr
        assert _everywhere(nodes, "203.0.113.9/32", present=False)
        assert pg.sql("SELECT count(*) FROM bans") == [(0,)]
        # A node that was down catches up on start (and its kernel keeps what it had).
        c, ns_c = nodes["c"]
        c.stop()
        assert a.ctl("ban", "203.0.113.10").returncode == 0
        assert wait_until(lambda: "203.0.113.10/32" in drops(nodes["b"][1]))
        assert "203.0.113.10/32" not in drops(ns_c)
        c.start()
        assert "203.0.113.10/32" in drops(ns_c)


def test_server_moved_from_sqlite_shares_its_live_bans(tmp_path: Path) -> None:
    """A node's first start on the shared store adopts what its kernel holds (its old SQLite
    days); the fleet then enforces it too."""
    from daemon_harness import DaemonProc
    from fleet_helpers import node_settings
    from netns import netns

    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg, netns("lwfm") as ns:
        alone = node_settings(pg, "m")
        alone["store"] = {"url": f"sqlite://{tmp_path / 'm' / 'old.db'}"}
        (tmp_path / "m").mkdir()
        old = DaemonProc(tmp_path / "m", alone, netns=ns.name).start()
        try:
            assert old.ctl("ban", "203.0.113.50").returncode == 0
            assert wait_until(lambda: "203.0.113.50/32" in drops(ns))
        finally:
            old.stop()
        with fleet(pg, tmp_path / "fleet", names=("a",)) as nodes:
            moved = DaemonProc(tmp_path / "m", node_settings(pg, "m"), netns=ns.name)
            try:
                moved.start()
                assert "action=adopt bans=1" in moved.stderr()
                assert pg.sql("SELECT node FROM bans WHERE net = '203.0.113.50/32'") == [("m",)]
                assert wait_until(lambda: "203.0.113.50/32" in drops(nodes["a"][1]))
                assert drops(ns) == ["203.0.113.50/32"]
            finally:
                moved.stop()
