"""Read-only engine queries behind `logwatchctl offenders` and `logwatchctl check IP`."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import FakeClock

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.core import Engine
from logwatch.engine.whitelist import Whitelist
from logwatch.parsing.events import Event


def ev(kind: str, ip: str, user: str | None = None) -> Event:
    return Event(datetime(2024, 1, 1), kind, ip, user, "smtp", "postfix/smtpd", "test", None)


@pytest.fixture
def engine():
    wl, _ = Whitelist.from_lines(["# office", "192.0.2.0/24", "2001:db8:7::5"], "/etc/wl")
    clock = FakeClock()
    e = Engine(RelayConfig(exclude=["198.18.0.0/15"]), BanConfig(),
               whitelist=wl, mynetworks=["10.0.0.0/8"], own_addresses=["198.51.100.1"],
               clock=clock)
    e.test_clock = clock
    return e


def test_offender_score_reasons_and_decay(engine):
    clock = engine.test_clock
    engine.handle(ev("user-unknown", "203.0.113.5", "a"))
    clock.now += 100
    engine.handle(ev("relay-denied", "203.0.113.5"))
    clock.now += 50
    o = engine.offender("203.0.113.5")
    assert (o["ip"], o["score"], o["threshold"]) == ("203.0.113.5/32", 3, 5)
    assert o["reasons"] == {"user-unknown": 1, "relay-denied": 1}
    start = 1_000_000.0
    assert o["decays_at"] == start + 600 and o["clears_at"] == start + 100 + 600
    assert o["last_seen"] == start + 100 and o["protected"] is False
    clock.now = start + 600          # the first hit leaves the window: score 2
    assert engine.offender("203.0.113.5")["score"] == 2
    clock.now = start + 700          # both gone from the scoring window ...
    o = engine.offender("203.0.113.5")
    # ... but the unknown user name still counts towards distinct_users for a day.
    assert (o["score"], o["distinct_users"], o["decays_at"]) == (0, 1, None)
    clock.now = start + 86400
    assert engine.offender("203.0.113.5") is None
    assert engine.offender("203.0.113.99") is None


def test_queries_change_nothing(engine):
    for _ in range(4):
        engine.handle(ev("auth-failed", "203.0.113.7"))
    before = (dict(engine._tracked), list(engine._tracked), engine.stats())
    engine.offenders()
    engine.offender("203.0.113.7")
    engine.verdict("203.0.113.7")
    assert (dict(engine._tracked), list(engine._tracked), engine.stats()) == before
    assert engine.handle(ev("auth-failed", "203.0.113.7"))       # the fifth still bans


def test_offenders_exclude_bans_and_sort_by_score(engine):
    for ip, n in (("203.0.113.1", 1), ("203.0.113.2", 3), ("203.0.113.3", 5), ("192.0.2.9", 2)):
        for _ in range(n):
            engine.handle(ev("auth-failed", ip))
    engine.ban("203.0.113.0/24")                 # covers .1 and .2 (kept tracked) and .3
    offenders, total = engine.offenders()
    assert [o["ip"] for o in offenders] == ["192.0.2.9/32"] and total == 1
    assert offenders[0]["protected"] is True     # whitelisted: scored, never banned
    engine.unban("203.0.113.0/24")
    offenders, total = engine.offenders(limit=1)
    assert total == 3 and [o["ip"] for o in offenders] == ["203.0.113.2/32"]


def test_offenders_can_rank_only_the_most_recently_seen(engine):
    """The status page's bounded walk: `scan` networks, the most recently seen first."""
    for i in range(1, 6):
        for _ in range(i % 4 + 1):              # .4 has the highest score, then .3
            engine.handle(ev("auth-failed", f"203.0.113.{i}"))
        engine.test_clock.now += 1
    engine.handle(ev("auth-failed", "203.0.113.1"))     # seen again: most recent now
    offenders, total = engine.offenders(scan=2)
    assert total == 2 and [o["ip"] for o in offenders] == ["203.0.113.1/32", "203.0.113.5/32"]
    assert engine.offenders(scan=100)[1] == engine.offenders()[1] == 5


def test_verdict_names_whitelist_line_and_other_protections(engine):
    v = engine.verdict("192.0.2.44")
    assert v["whitelisted"] and v["protected"]
    assert v["protected_by"] == [{"what": "whitelist", "entry": "192.0.2.0/24",
                                  "file": "/etc/wl", "line": 2}]
    # IPv6 counts per /64: a neighbour of a whitelisted address is protected, not whitelisted.
    v = engine.verdict("2001:db8:7::99")
    assert not v["whitelisted"] and v["protected"] and v["offender_net"] == "2001:db8:7::/64"
    assert v["protected_by"][0]["line"] == 3
    assert engine.verdict("10.1.2.3")["protected_by"] == [{"what": "mynetworks",
                                                          "entry": "10.0.0.0/8"}]
    assert engine.verdict("198.51.100.1")["protected_by"] == [{"what": "own-address",
                                                              "entry": "198.51.100.1/32"}]
    assert engine.verdict("::ffff:127.0.0.1")["protected_by"][0]["what"] == "loopback"
    assert engine.verdict("198.19.0.1")["never_granted_by"] == [{"what": "relay.exclude",
                                                                "entry": "198.18.0.0/15"}]
    with pytest.raises(ValueError):
        engine.verdict("1.2.3")


def test_verdict_grant_and_ban(engine):
    engine.grant("203.0.113.20", 60)
    engine.ban("2001:db8:99::1")
    v = engine.verdict("203.0.113.20")
    assert v["granted"] and v["grant"]["expires"] == engine.test_clock.now + 60
    assert not v["banned"] and v["offender"] is None
    v = engine.verdict("2001:db8:99::abcd")
    assert v["banned"] and v["ban"]["ip"] == "2001:db8:99::/64" and v["ban"]["source"] == "manual"
