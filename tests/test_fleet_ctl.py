"""logwatchctl with a shared store (pure formatting and the command table): the NODE column,
the fleet's grants, status's store/node/peers lines; no column with a local store."""

from __future__ import annotations

from logwatch.cli.ctl import format_bans, format_grants, format_status
from logwatch.engine.model import Grant
from logwatch.services.commands import Actions, Commands


class _Engine:
    bans: dict = {}
    grants = {"192.0.2.7": Grant("192.0.2.7", "bob", "imap", 10.0, 4000.0)}


def _commands(shared: bool) -> Commands:
    extra = {} if not shared else {
        "nodes": lambda kind: {"192.0.2.7": "imap1"} if kind == "grants" else {},
        "fleet_grants": lambda: [(Grant("192.0.2.8", "eve", "pop3", 20.0, 4000.0), "imap2")]}
    return Commands(_Engine(), Actions(status=lambda: {}, apply=lambda e: None,
                                       reload=lambda: (True, ""), **extra))


def test_grants_show_the_deciding_node_only_when_shared() -> None:
    local = _commands(False)({"cmd": "grants"})["grants"]
    assert [g["ip"] for g in local] == ["192.0.2.7"] and "node" not in local[0]
    assert "NODE" not in format_grants(local, clock=lambda: 100.0)
    shared = _commands(True)({"cmd": "grants"})["grants"]
    assert [(g["ip"], g["node"]) for g in shared] == [("192.0.2.7", "imap1"),
                                                      ("192.0.2.8", "imap2")]
    lines = format_grants(shared, clock=lambda: 100.0).splitlines()
    assert lines[0].split()[-1] == "NODE" and lines[2].split()[-1] == "imap2"


def test_bans_node_column_and_status_lines() -> None:
    bans = [{"ip": "198.51.100.7/32", "reason": "user-unknown:5", "since": 1.0,
             "expires": None, "node": "smtp2"}]
    assert format_bans(bans, clock=lambda: 100.0).splitlines()[1].split()[-1] == "smtp2"
    text = format_status({"store": "postgresql://lw:***@db1/logwatchd",
                          "fleet": {"node": "smtp1", "listening": True,
                                    "peers": [{"node": "imap1", "seen": 3.2}]}})
    assert "store:         postgresql://lw:***@db1/logwatchd" in text
    assert "node:          smtp1" in text and "peers:         imap1 (3.2s ago)" in text


def test_adopted_rows_are_checked_like_a_manual_ban() -> None:
    """A row no logwatchd writes (a /0, garbage, an expired one) is never enforced."""
    from logwatch.daemon.config import BanConfig, RelayConfig
    from logwatch.engine.core import Engine
    from logwatch.engine.model import Ban

    eng = Engine(RelayConfig(), BanConfig(), clock=lambda: 100.0)
    rows = [Ban("0.0.0.0/0", 1.0, None, 1.0, {}, 1), Ban("not a net", 1.0, None, 1.0, {}, 1),
            Ban("192.0.2.9/32", 1.0, 50.0, 1.0, {}, 1), Ban("127.0.0.1/32", 1.0, None, 1, {}, 1),
            Ban("198.51.100.7/32", 1.0, 1000.0, 5.0, {"user-unknown": 5}, 1)]
    assert [b.net for b in eng.adopt_bans(rows)] == ["198.51.100.7/32"]
    assert eng.adopt_bans(rows) == []                      # already held: nothing new
    assert eng.covered_by_ban("198.51.100.7") and not eng.covered_by_ban("198.51.100.8")
    assert eng.drop_bans(["198.51.100.7/32", "203.0.113.1/32"]) == ["198.51.100.7/32"]
    assert not eng.bans


def test_an_adopted_wide_ban_is_found_like_one_decided_here() -> None:
    """A peer's /24 (not offender-shaped) holds its addresses for banned_net() (the policy
    service's question) exactly as a local one does, and no longer once dropped."""
    from logwatch.daemon.config import BanConfig, RelayConfig
    from logwatch.engine.core import Engine
    from logwatch.engine.model import Ban

    eng = Engine(RelayConfig(), BanConfig(), clock=lambda: 100.0)
    assert [b.net for b in eng.adopt_bans([Ban("198.51.100.0/24", 1.0, 1000.0, 5.0, {}, 1,
                                               "manual")])] == ["198.51.100.0/24"]
    assert eng.banned_net("198.51.100.77") == "198.51.100.0/24"
    assert eng.covered_by_ban("198.51.100.77") and eng.banned_net("198.51.101.1") is None
    assert eng.drop_bans(["198.51.100.0/24"]) == ["198.51.100.0/24"]
    assert eng.banned_net("198.51.100.77") is None
