"""Log time in the pure engine (issue 12 point 16) and IPv6 ban aggregation next to protected
addresses (point 17); the clock is injected, event times are the lines' own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import FakeClock

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.core import LOG_CLOCK_SKEW, PREFIX_FALLBACK, Engine
from logwatch.engine.model import BanAdded, GrantAdded
from logwatch.engine.whitelist import Whitelist
from logwatch.parsing.events import Event

NOW = 1_795_305_600.0          # 2026-11-22 00:00 UTC
DAY = 86400.0


def at(when: float, kind: str, ip: str, user: str | None = None,
       service: str | None = "imap") -> Event:
    return Event(datetime.fromtimestamp(when, UTC), kind, ip, user, service, "x", "test", None)


def make(relay: dict | None = None, **bans) -> tuple[Engine, FakeClock]:
    clock = FakeClock(NOW)
    kw = {k: bans.pop(k) for k in ("whitelist", "mynetworks", "own_addresses") if k in bans}
    return Engine(RelayConfig(**(relay or {})), BanConfig(**bans), clock=clock, **kw), clock


def bans_of(effects) -> list:
    return [e.ban for e in effects if isinstance(e, BanAdded)]


# -- grants run from the login's own time ---------------------------------------------------

def test_grant_expires_grace_after_the_login_time():
    engine, _ = make()
    (eff,) = engine.handle(at(NOW - 600, "login", "192.0.2.7", "bob"))
    assert isinstance(eff, GrantAdded)
    assert eff.grant.granted_at == NOW - 600 and eff.grant.expires_at == NOW - 600 + 1800


def test_a_login_from_yesterday_grants_nothing():
    engine, _ = make()
    assert engine.handle(at(NOW - DAY, "login", "192.0.2.7", "bob")) == []
    assert engine.handle(at(NOW - 1800, "login", "192.0.2.8", "bob")) == []   # expiry == now
    assert engine.grants == {} and engine.stats()["grants_stale"] == 2


def test_an_old_login_does_not_shorten_a_newer_grant():
    engine, _ = make()
    engine.handle(at(NOW, "login", "192.0.2.7", "bob"))
    engine.handle(at(NOW - 1000, "login", "192.0.2.7", "bob"))   # a late line of another log
    assert engine.grants["192.0.2.7"].expires_at == NOW + 1800


def test_future_within_skew_keeps_its_time_beyond_is_now_and_counted():
    engine, _ = make()
    engine.handle(at(NOW + LOG_CLOCK_SKEW, "login", "192.0.2.7"))
    assert engine.grants["192.0.2.7"].expires_at == NOW + LOG_CLOCK_SKEW + 1800
    assert engine.stats()["time_future"] == 0
    year_2099 = datetime(2099, 1, 1, tzinfo=UTC).timestamp()
    engine.handle(at(year_2099, "login", "192.0.2.8"))
    assert engine.grants["192.0.2.8"].expires_at == NOW + 1800
    assert engine.stats()["time_future"] == 1


def test_unreadable_time_is_now_and_counted():
    engine, _ = make()
    ev = Event(None, "login", "192.0.2.7", "bob", "imap", "x", "t", None)  # type: ignore[arg-type]
    engine.handle(ev)
    assert engine.grants["192.0.2.7"].granted_at == NOW
    assert engine.stats()["time_invalid"] == 1


# -- scores count in log time -----------------------------------------------------------

def test_failures_spread_over_five_days_do_not_ban_at_once():
    """--from-start over a week of logs: one failure a day is no guesser (distinct users off)."""
    engine, _ = make(maxretry=5, findtime=600, distinct_users=0)
    effects = []
    for day in range(5, 0, -1):
        effects += engine.handle(at(NOW - day * DAY + 1, "auth-failed", "192.0.2.7"))
    assert bans_of(effects) == [] and engine.bans == {}


def test_failures_one_hour_apart_in_log_time_do_not_ban():
    engine, _ = make(maxretry=3, findtime=600, distinct_users=0, distinct_window=0)
    effects = []
    for i in range(3):
        effects += engine.handle(at(NOW - 7200 + i * 3600, "auth-failed", "192.0.2.7"))
    assert engine.bans == {} and bans_of(effects) == []


def test_a_burst_in_the_past_log_bans_from_now():
    """Five failures within findtime of each other, an hour ago (replayed after downtime):
    a guesser. The ban runs from now: the daemon can only drop packets from now on."""
    engine, _ = make(maxretry=5, findtime=600)
    effects = []
    for i in range(5):
        effects += engine.handle(at(NOW - 3600 + i * 10, "auth-failed", "192.0.2.7"))
    (ban,) = bans_of(effects)
    assert ban.since == NOW and ban.expires_at == NOW + 3600


def test_older_than_every_window_is_skipped_and_counted():
    engine, _ = make(maxretry=1, findtime=600, distinct_window=3600)
    assert engine.handle(at(NOW - 3601, "auth-failed", "192.0.2.7")) == []
    assert engine.stats()["ignored_stale"] == 1 and not engine.is_tracked("192.0.2.7")
    assert len(bans_of(engine.handle(at(NOW - 3000, "auth-failed", "192.0.2.7")))) == 1


def test_out_of_order_lines_still_count_within_the_window():
    """Two logs read one after the other: times interleave; windows are by time, not order."""
    engine, _ = make(maxretry=4, findtime=600, distinct_users=0)
    times = [NOW - 100, NOW - 300, NOW - 50, NOW - 200]
    effects = []
    for t in times:
        effects += engine.handle(at(t, "auth-failed", "192.0.2.7"))
    assert len(bans_of(effects)) == 1


def test_out_of_order_line_outside_the_window_does_not_count():
    engine, _ = make(maxretry=3, findtime=600, distinct_users=0)
    for t in (NOW - 10, NOW - 5, NOW - 900):      # the last is older than the window
        engine.handle(at(t, "auth-failed", "192.0.2.7"))
    assert engine.bans == {} and engine.tracked_hits("192.0.2.7") == 2


def test_distinct_users_window_in_log_time():
    engine, _ = make(maxretry=100, distinct_users=3, distinct_window=3600)
    effects = []
    for i, t in enumerate((NOW - 3500, NOW - 3400, NOW)):   # 3 users within an hour of log time
        effects += engine.handle(at(t, "user-unknown", "192.0.2.7", f"u{i}"))
    assert len(bans_of(effects)) == 1
    engine2, _ = make(maxretry=100, distinct_users=3, distinct_window=3600)
    for i, t in enumerate((NOW - 3500, NOW, NOW + 200)):   # first and last 3700 s apart
        engine2.handle(at(t, "user-unknown", "192.0.2.8", f"u{i}"))
    assert engine2.bans == {}


def test_a_2099_line_does_not_pin_scores():
    """A bogus future date is now: it counts once, and later real failures still add up."""
    engine, clock = make(maxretry=3, findtime=600, distinct_users=0)
    engine.handle(at(datetime(2099, 1, 1, tzinfo=UTC).timestamp(), "auth-failed", "192.0.2.7"))
    clock.now += 700                                    # the bogus hit leaves the window
    engine.handle(at(clock.now, "auth-failed", "192.0.2.7"))
    engine.handle(at(clock.now, "auth-failed", "192.0.2.7"))
    assert engine.bans == {}
    assert len(bans_of(engine.handle(at(clock.now, "auth-failed", "192.0.2.7")))) == 1


# -- IPv6 aggregation next to protected addresses ---------------------------------------------

def test_ipv6_prefix_fallback_around_an_own_address():
    """A guesser in the host's own /64 is banned on the shortest prefix without the host."""
    engine, _ = make(maxretry=1, own_addresses=["2001:db8:1::25"])
    (ban,) = bans_of(engine.handle(at(NOW, "auth-failed", "2001:db8:1:0:8000::1")))
    assert ban.net == "2001:db8:1:0:8000::/65"
    assert ban.reason == {"auth-failed": 1, PREFIX_FALLBACK: 64}
    assert not engine.is_protected(ban.net) and engine.stats()["bans_narrowed"] == 1
    # Further failures from inside the narrowed ban are ignored as banned.
    assert engine.handle(at(NOW, "auth-failed", "2001:db8:1:0:8000::2")) == []
    assert engine.stats()["ignored_banned"] == 1


def test_ipv6_prefix_fallback_down_to_the_address():
    wl, _ = Whitelist.from_lines(["2001:db8:2::1"])
    engine, _ = make(maxretry=1, whitelist=wl)
    (ban,) = bans_of(engine.handle(at(NOW, "auth-failed", "2001:db8:2::")))
    assert ban.net == "2001:db8:2::/128"


def test_protected_address_itself_is_still_never_banned():
    engine, _ = make(maxretry=1, own_addresses=["2001:db8:1::25"])
    assert engine.handle(at(NOW, "auth-failed", "2001:db8:1::25")) == []
    assert engine.bans == {} and engine.stats()["ignored_protected"] == 1


def test_ipv4_prefix_fallback_too():
    engine, _ = make(maxretry=1, ipv4_prefix=24, mynetworks=["192.0.2.1"])
    (ban,) = bans_of(engine.handle(at(NOW, "auth-failed", "192.0.2.200")))
    assert ban.net == "192.0.2.128/25" and ban.reason[PREFIX_FALLBACK] == 24


def test_no_fallback_when_the_offender_network_is_free():
    engine, _ = make(maxretry=1, own_addresses=["2001:db8:1::25"])
    (ban,) = bans_of(engine.handle(at(NOW, "auth-failed", "2001:db8:7::5")))
    assert ban.net == "2001:db8:7::/64" and PREFIX_FALLBACK not in ban.reason


@pytest.mark.parametrize("ip", ["2001:db8:1::1", "2001:db8:1:0:ffff::9", "2001:db8:1::24"])
def test_narrowed_ban_never_covers_a_protected_address(ip):
    engine, _ = make(maxretry=1, own_addresses=["2001:db8:1::25", "2001:db8:1::8000:0"])
    (ban,) = bans_of(engine.handle(at(NOW, "auth-failed", ip)))
    assert not engine.is_protected(ban.net)
    wider = int(ban.net.split("/")[1]) - 1
    assert engine.narrowest_unprotected(ip) == ban.net and wider >= 64


# -- the daemon's lag ---------------------------------------------------------------------------

def test_one_line_dated_2099_does_not_pin_the_lag_at_zero():
    import argparse
    import types

    from logwatch.daemon.app import Daemon
    from logwatch.daemon.config import Config

    cfg = Config()
    cfg.daemon.actions_log = None
    clock = FakeClock(NOW)
    d = Daemon(cfg, None, argparse.Namespace(), clock=clock)
    d.engine = types.SimpleNamespace(handle=lambda ev: [])
    d.parser = types.SimpleNamespace(stats=None)
    d.feed([at(NOW - 30, "rejected", "192.0.2.7")])
    d.feed([at(datetime(2099, 1, 1, tzinfo=UTC).timestamp(), "rejected", "192.0.2.7")])
    assert d.counters.newest_event == NOW - 30
    clock.now += 60
    d.feed([at(NOW + 50, "rejected", "192.0.2.7")])
    assert d.counters.newest_event == NOW + 50       # real lines keep moving it


def test_log_time_counts_for_status():
    engine, _ = make()
    engine.handle(at(datetime(2099, 1, 1, tzinfo=UTC).timestamp(), "login", "192.0.2.7"))
    engine.handle(at(NOW - DAY, "login", "192.0.2.8"))
    engine.handle(at(NOW - 2 * DAY, "auth-failed", "192.0.2.9"))
    assert engine.log_time_counts() == {"future": 1, "unreadable": 0, "stale_logins": 1,
                                        "stale_failures": 1}
