"""Issue 17, scenario 3: PostgreSQL stopped in the middle of a 5,000-ban storm on node A and
restarted. Node A keeps reading its log and banning in its own kernel while the database is
away, queues its decisions and replays them; afterwards every node's firewall equals the ban
table: nothing lost, no duplicates, no orphans."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fleet_helpers import drops, fleet, unknown_user
from netns import wait_until
from pgserver import postgres_server

STORM = 5000

pytestmark = pytest.mark.needs("root", "ip", "iptables", "ip6tables")


def _guessers() -> list[str]:
    return [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(STORM)]


def _table(pg) -> set[str]:  # type: ignore[no-untyped-def]
    return {r[0] for r in pg.sql("SELECT net FROM bans")}


def test_database_stopped_during_a_ban_storm(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    ips = _guessers()
    expected = {f"{ip}/32" for ip in ips}
    with postgres_server() as pg, \
            fleet(pg, tmp_path, extra={"bans": {"maxretry": 1}}) as nodes:
        a, ns_a = nodes["a"]
        half = STORM // 2
        a.append(*[unknown_user(ip, "x") for ip in ips[:half]])
        assert wait_until(lambda: len(_table(pg)) >= half // 2, timeout=30), a.stderr()[-2000:]
        pg.stop("fast")
        try:
            a.append(*[unknown_user(ip, "y") for ip in ips[half:]])
            # The database is away: node A still reads its log and bans in its own kernel.
            assert wait_until(lambda: len(drops(ns_a)) == STORM, timeout=30), \
                a.stderr()[-2000:]
            # The batch's store commit (and its error line) follows its firewall write.
            assert wait_until(lambda: "action=store-error" in a.stderr(), timeout=10), \
                a.stderr()[-4000:]
            time.sleep(1)
        finally:
            pg.start()
        assert wait_until(lambda: _table(pg) == expected, timeout=45), \
            (len(_table(pg)), a.stderr()[-3000:])

        def in_step() -> bool:
            return all(sorted(drops(ns)) == sorted(expected) for _d, ns in nodes.values())

        assert wait_until(in_step, timeout=45, step=0.5), \
            {name: (len(drops(ns)), len(set(drops(ns))), len(set(drops(ns)) - expected),
                    d.stderr()[-1500:]) for name, (d, ns) in nodes.items()}
        # Nothing applied twice: one DROP per net in every kernel, one row per net.
        for _d, ns in nodes.values():
            nets = drops(ns)
            assert len(nets) == len(set(nets)) == STORM
        assert pg.sql("SELECT count(*), count(DISTINCT net) FROM bans") == [(STORM, STORM)]
