"""Issue 17, gap 4: the failure hits a node reads while PostgreSQL is away are announced to
the peers once it is back, each exactly once (a resent announcement is recognised by its id)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from daemon_harness import DaemonProc
from fleet_helpers import node_settings, unknown_user
from netns import wait_until
from pgserver import postgres_server

from logwatch.daemon.fleet import FleetSync

GUESSER = "198.51.100.77"


def _score(d: DaemonProc) -> float:
    offender = d.req(cmd="check", ip=GUESSER).get("offender")
    return offender["score"] if offender else 0.0


@pytest.mark.needs("root")
def test_hits_read_while_the_database_is_away_reach_the_peers_once(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    with postgres_server() as pg:
        nodes = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            # No firewall: only the scores matter here; maxretry above what is sent.
            nodes[name] = DaemonProc(tmp_path / name, node_settings(
                pg, name, "none", {"bans": {"maxretry": 50}}))
        a, b = nodes["a"], nodes["b"]
        try:
            a.start()
            b.start()
            a.append(unknown_user(GUESSER, "x"))
            assert wait_until(lambda: _score(b) == 1, timeout=10), b.stderr()[-1500:]
            pg.stop("fast")
            try:
                a.append(*[unknown_user(GUESSER, "x") for _ in range(3)])
                assert wait_until(lambda: _score(a) == 4, timeout=10)
                assert wait_until(lambda: "action=fleet-hits result=failed" in a.stderr(),
                                  timeout=10), a.stderr()[-1500:]
                assert a.req(cmd="status")["fleet"]["hits_queued"] == 3
            finally:
                pg.start()
            # Replayed by A's next heartbeat (every 10 s) or its next hit; B counts them.
            assert wait_until(lambda: _score(b) == 4, timeout=40), \
                (a.stderr()[-2000:], b.stderr()[-2000:])
            assert "action=fleet-hits result=replayed" in a.stderr()
            a.append(unknown_user(GUESSER, "x"))
            assert wait_until(lambda: _score(b) == 5, timeout=10)
            assert _score(a) == 5 and a.req(cmd="status")["fleet"]["hits_queued"] == 0
        finally:
            for d in nodes.values():
                if d.proc and d.proc.poll() is None:
                    d.stop(signal.SIGTERM)


def test_a_repeated_announcement_is_counted_once() -> None:
    """A payload resent after an ambiguous failure (its id seen already) is skipped."""
    fed: list = []
    loop = SimpleNamespace(on_timer=lambda name, fn: None)
    daemon = SimpleNamespace(store=SimpleNamespace(node_key="b"), loop=loop,
                             counters=SimpleNamespace(started=1.0), feed=fed.extend)
    sync = FleetSync(daemon)
    hit = ["2026-01-01T00:00:00", "user-unknown", GUESSER, "x", "smtp"]
    payload = json.dumps({"n": "a", "i": "5.000000:1", "h": [hit, hit]})
    sync.handle([payload, payload])
    sync.handle([payload])
    assert len(fed) == 2 and sync.stats["hits_repeated"] == 2
    sync.handle([json.dumps({"n": "a", "i": "5.000000:2", "h": [hit]}),
                 json.dumps({"n": "c", "i": "5.000000:1", "h": [hit]})])
    assert len(fed) == 4
