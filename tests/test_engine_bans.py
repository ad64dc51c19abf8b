"""Offender scoring and bans in the pure engine, with an injected clock."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.engine.core import Engine
from logwatch.engine.model import Ban, BanAdded, BanLifted
from logwatch.engine.whitelist import NetSet, Whitelist
from logwatch.parsing.events import Event


def ev(kind: str, ip: str, user: str | None = None, service: str | None = "smtp") -> Event:
    return Event(datetime(2024, 1, 1), kind, ip, user, service, "postfix/smtpd", "test", None)


def make(clock: FakeClock | None = None, **bans) -> tuple[Engine, FakeClock]:
    clock = clock or FakeClock()
    kw = {k: bans.pop(k) for k in ("whitelist", "mynetworks", "own_addresses") if k in bans}
    return Engine(RelayConfig(), BanConfig(**bans), clock=clock, **kw), clock


def added(effects) -> list[Ban]:
    return [e.ban for e in effects if isinstance(e, BanAdded)]


def feed(engine: Engine, kind: str, ip: str, n: int, clock: FakeClock | None = None,
         step: float = 0.0, user_prefix: str | None = None) -> list:
    out = []
    for i in range(n):
        user = f"{user_prefix}{i}" if user_prefix else None
        out += engine.handle(ev(kind, ip, user))
        if clock is not None:
            clock.now += step
    return out


# -- threshold and window ------------------------------------------------------

def test_maxretry_bans_on_fifth_failure():
    engine, clock = make()
    assert feed(engine, "auth-failed", "192.0.2.7", 4) == []
    effects = engine.handle(ev("auth-failed", "192.0.2.7"))
    (ban,) = added(effects)
    assert ban.net == "192.0.2.7/32"
    assert ban.since == clock.now
    assert ban.expires_at == clock.now + 3600
    assert ban.score == 5
    assert ban.reason == {"auth-failed": 5}
    assert ban.offences == 1 and ban.source == "auto"
    assert "192.0.2.7/32" in engine.bans


def test_reason_counts_each_kind():
    engine, _ = make()
    engine.handle(ev("user-unknown", "192.0.2.7", "a"))
    engine.handle(ev("login-failed", "192.0.2.7"))
    (ban,) = added(engine.handle(ev("relay-denied", "192.0.2.7")) +
                   engine.handle(ev("auth-failed", "192.0.2.7")))
    assert ban.reason == {"user-unknown": 1, "login-failed": 1, "relay-denied": 1,
                          "auth-failed": 1}
    assert ban.score == 5


def test_event_exactly_findtime_old_no_longer_counts():
    engine, clock = make()
    engine.handle(ev("auth-failed", "192.0.2.7"))           # at t0
    clock.now += 1
    feed(engine, "auth-failed", "192.0.2.7", 3)             # at t0 + 1
    clock.now += 599                                        # t0 + 600: the first is findtime old
    assert engine.score("192.0.2.7") == 3
    assert added(engine.handle(ev("auth-failed", "192.0.2.7"))) == []


def test_event_just_inside_findtime_counts():
    engine, clock = make()
    engine.handle(ev("auth-failed", "192.0.2.7"))
    clock.now += 1
    feed(engine, "auth-failed", "192.0.2.7", 3)
    clock.now += 598.999                                    # t0 + 599.999
    assert len(added(engine.handle(ev("auth-failed", "192.0.2.7")))) == 1


def test_slow_failures_never_reach_threshold():
    engine, clock = make()
    assert added(feed(engine, "auth-failed", "192.0.2.7", 100, clock, step=150.0)) == []
    # 150 s after the last one: hits 150, 300 and 450 s old count, the one 600 s old does not.
    assert engine.score("192.0.2.7") == 3


def test_weights_relay_denied_two_rejected_zero():
    engine, _ = make()
    assert added(feed(engine, "rejected", "192.0.2.7", 50)) == []
    assert not engine.is_tracked("192.0.2.7")               # weight 0 costs no memory
    feed(engine, "relay-denied", "192.0.2.7", 2)
    assert engine.score("192.0.2.7") == 4
    assert len(added(engine.handle(ev("relay-denied", "192.0.2.7")))) == 1


def test_custom_weights_and_fractional_sum():
    engine, _ = make(weights={"auth-failed": 0.1}, maxretry=1)
    assert added(feed(engine, "auth-failed", "192.0.2.7", 9)) == []
    assert added(feed(engine, "user-unknown", "192.0.2.7", 20)) == []   # not weighted any more
    assert len(added(engine.handle(ev("auth-failed", "192.0.2.7")))) == 1


def test_success_and_unknown_kinds_are_not_scored():
    engine, _ = make(maxretry=1)
    effects = feed(engine, "login", "192.0.2.7", 3) + feed(engine, "auth", "192.0.2.7", 3)
    assert added(effects) == [] and engine.bans == {}
    assert engine.handle(ev("no-such-kind", "192.0.2.7")) == []
    assert engine.bans == {}


def test_invalid_ip_ignored():
    engine, _ = make(maxretry=1)
    assert engine.handle(ev("auth-failed", "not-an-ip")) == []
    assert engine.stats()["ignored_invalid"] == 1


def test_events_for_banned_ip_are_ignored():
    engine, clock = make()
    feed(engine, "auth-failed", "192.0.2.7", 5)
    assert feed(engine, "auth-failed", "192.0.2.7", 20) == []
    assert not engine.is_tracked("192.0.2.7")
    assert engine.stats()["ignored_banned"] == 20
    assert engine.bans["192.0.2.7/32"].reason == {"auth-failed": 5}


def test_bans_disabled():
    engine, _ = make(enabled=False)
    assert feed(engine, "auth-failed", "192.0.2.7", 50) == []


# -- growth, cap, permanent ------------------------------------------------------

def ban_cycle(engine: Engine, clock: FakeClock, ip: str = "192.0.2.7") -> Ban:
    (ban,) = added(feed(engine, "auth-failed", ip, 5))
    if ban.expires_at is not None:
        clock.now = ban.expires_at
        lifted = engine.sweep()
        assert BanLifted(ban.net, "expired") in lifted
    return ban


def test_growth_factor_and_cap():
    engine, clock = make(bantime=100, growth=3, max_bantime=2000)
    durations = [b.expires_at - b.since for b in (ban_cycle(engine, clock) for _ in range(5))]
    assert durations == [100, 300, 900, 2000, 2000]
    assert engine.offender_rows()[0][:2] == ("192.0.2.7/32", 5)


def test_growth_one_keeps_duration():
    engine, clock = make(bantime=100, growth=1)
    durations = [b.expires_at - b.since for b in (ban_cycle(engine, clock) for _ in range(3))]
    assert durations == [100, 100, 100]


def test_huge_history_does_not_overflow():
    engine, clock = make(bantime=100, growth=10, max_bantime=5000)
    engine.load([], [], [("192.0.2.7/32", 5000, clock.now - 10)])
    ban = ban_cycle(engine, clock)
    assert ban.offences == 5001
    assert ban.expires_at - ban.since == 5000


def test_permanent_after_threshold():
    engine, clock = make(bantime=10, permanent_after=2)
    first, second = ban_cycle(engine, clock), ban_cycle(engine, clock)
    assert first.expires_at is not None and second.expires_at is not None
    third = ban_cycle(engine, clock)
    assert third.expires_at is None and third.offences == 3
    clock.now += 10 * 365 * 86400
    assert engine.sweep() == []
    assert "192.0.2.7/32" in engine.bans
    assert engine.stats()["permanent_bans"] == 1


def test_history_restored_from_store_drives_growth():
    engine, clock = make(bantime=100, growth=2)
    engine.load([], [], [("192.0.2.7/32", 2, clock.now - 5000)])
    ban = ban_cycle(engine, clock)
    assert ban.expires_at - ban.since == 400 and ban.offences == 3


# -- prefixes ------------------------------------------------------------------

def test_ipv6_same_64_adds_up():
    engine, _ = make()
    for i in range(4):
        assert engine.handle(ev("auth-failed", f"2001:db8:1:2::{i + 1:x}")) == []
    (ban,) = added(engine.handle(ev("auth-failed", "2001:db8:1:2:ffff:ffff:ffff:ffff")))
    assert ban.net == "2001:db8:1:2::/64"


def test_ipv6_different_64_do_not_add_up():
    engine, _ = make()
    for i in range(20):
        assert engine.handle(ev("auth-failed", f"2001:db8:1:{i:x}::1")) == []
    assert engine.stats()["tracked"] == 20


def test_ipv6_prefix_configurable():
    engine, _ = make(ipv6_prefix=48)
    feed(engine, "auth-failed", "2001:db8:1:1::1", 4)
    (ban,) = added(engine.handle(ev("auth-failed", "2001:db8:1:ffff::1")))
    assert ban.net == "2001:db8:1::/48"


def test_ipv4_prefix_configurable():
    engine, _ = make(ipv4_prefix=24)
    for i in range(4):
        engine.handle(ev("auth-failed", f"198.51.100.{i + 1}"))
    (ban,) = added(engine.handle(ev("auth-failed", "198.51.100.200")))
    assert ban.net == "198.51.100.0/24"
    assert engine.handle(ev("auth-failed", "198.51.100.99")) == []     # covered by the ban
    assert engine.stats()["ignored_banned"] == 1


def test_ipv4_default_prefix_keeps_neighbours_apart():
    engine, _ = make()
    for i in range(20):
        assert engine.handle(ev("auth-failed", f"198.51.100.{i}")) == []


# -- distinct users --------------------------------------------------------------

def test_distinct_users_ban_slow_guesser():
    engine, clock = make(distinct_users=10, distinct_window=86400)
    # One guess per hour never reaches maxretry in 10 minutes, but 10 names in 10 hours do.
    effects = feed(engine, "user-unknown", "192.0.2.7", 9, clock, step=3600, user_prefix="u")
    assert added(effects) == []
    (ban,) = added(engine.handle(ev("user-unknown", "192.0.2.7", "tenth")))
    assert ban.reason["distinct-users"] == 10
    assert ban.reason["user-unknown"] == 1              # only one in the last findtime


def test_same_user_repeated_is_not_distinct():
    engine, clock = make(distinct_users=3)
    effects = []
    for _ in range(50):
        effects += engine.handle(ev("user-unknown", "192.0.2.7", "admin"))
        effects += engine.handle(ev("user-unknown", "192.0.2.7", "ADMIN"))   # same, case folded
        clock.now += 3000
    assert added(effects) == []


def test_distinct_users_outside_window_do_not_count():
    engine, clock = make(distinct_users=3, distinct_window=7200)
    engine.handle(ev("user-unknown", "192.0.2.7", "a"))
    clock.now += 3600
    engine.handle(ev("user-unknown", "192.0.2.7", "b"))
    clock.now += 3600                                    # "a" is now exactly the window old
    assert added(engine.handle(ev("user-unknown", "192.0.2.7", "c"))) == []
    clock.now += 1
    assert len(added(engine.handle(ev("user-unknown", "192.0.2.7", "d")))) == 1


def test_distinct_users_disabled_with_zero():
    engine, clock = make(distinct_users=0)
    effects = feed(engine, "user-unknown", "192.0.2.7", 50, clock, step=3600, user_prefix="u")
    assert added(effects) == []


# -- memory bounds ---------------------------------------------------------------

def test_tracked_cap_evicts_least_recently_seen():
    engine, clock = make(max_tracked=3)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        engine.handle(ev("auth-failed", ip))
        clock.now += 1
    engine.handle(ev("auth-failed", "192.0.2.1"))          # .1 is now the most recent
    engine.handle(ev("auth-failed", "192.0.2.4"))          # evicts .2, the least recently seen
    assert [engine.is_tracked(f"192.0.2.{i}") for i in (1, 2, 3, 4)] == [True, False, True, True]
    assert engine.stats()["tracked"] == 3 and engine.stats()["evicted"] == 1
    assert engine.score("192.0.2.1") == 2
    # Lowering the cap on reload trims at once, least recently seen first.
    engine.reconfigure(RelayConfig(), BanConfig(max_tracked=1))
    assert [engine.is_tracked(f"192.0.2.{i}") for i in (1, 3, 4)] == [False, False, True]


def test_sweep_prunes_offenders_not_seen_within_the_horizon():
    engine, clock = make(distinct_window=3600)
    engine.handle(ev("auth-failed", "192.0.2.1"))
    clock.now += 1000
    engine.handle(ev("auth-failed", "192.0.2.2"))
    clock.now += 2600                                      # .1 is exactly 3600 s old
    engine.sweep()
    assert not engine.is_tracked("192.0.2.1")
    assert engine.is_tracked("192.0.2.2")
    assert engine.stats()["pruned"] == 1


def test_next_deadline_includes_forgetting_stale_offenders():
    engine, clock = make(findtime=600, distinct_window=3600)
    start = clock.now
    assert engine.next_deadline() is None
    engine.handle(ev("auth-failed", "192.0.2.1"))
    clock.now += 10
    engine.handle(ev("auth-failed", "192.0.2.2"))      # would be forgotten at start + 3610
    assert engine.next_deadline() == start + 3600
    clock.now = start + 3600
    engine.sweep()
    assert not engine.is_tracked("192.0.2.1") and engine.is_tracked("192.0.2.2")
    # The next forgetting sweep is at least PRUNE_INTERVAL (60 s) after this one.
    assert engine.next_deadline() == start + 3660
    clock.now = start + 3660
    engine.sweep()
    assert engine.stats()["tracked"] == 0 and engine.next_deadline() is None
    # A ban expiry that comes sooner wins.
    engine.handle(ev("auth-failed", "192.0.2.3"))
    engine.ban("198.51.100.1", duration=5)
    assert engine.next_deadline() == clock.now + 5


def test_old_hits_pruned_within_a_key():
    engine, clock = make(distinct_users=0)
    feed(engine, "auth-failed", "192.0.2.7", 1000, clock, step=200.0)
    # Only the hits still inside findtime (600 s) are kept: 200 and 400 s old, and the newest.
    assert engine.tracked_hits("192.0.2.7") == 3


def test_many_hits_per_offender_pack_and_count():
    engine, clock = make(weights={"auth-failed": 0.01}, maxretry=1)
    assert added(feed(engine, "auth-failed", "192.0.2.7", 99, clock, step=1.0)) == []
    assert engine.tracked_hits("192.0.2.7") == 99
    assert engine.score("192.0.2.7") == pytest.approx(0.99)
    assert len(added(engine.handle(ev("auth-failed", "192.0.2.7")))) == 1


def test_repeated_user_keeps_memory_bounded_over_a_day():
    engine, clock = make(distinct_users=10, distinct_window=86400)
    for i in range(2000):           # one guess every 3 minutes, cycling over 3 names
        assert engine.handle(ev("user-unknown", "192.0.2.7", f"name{i % 3}")) == []
        clock.now += 180
    # Hits older than findtime keep only the newest per user name.
    assert engine.tracked_hits("192.0.2.7") <= 3 + 4


def test_clock_stepping_backwards_is_harmless():
    engine, clock = make()
    feed(engine, "auth-failed", "192.0.2.7", 3)
    clock.now -= 10 * 365 * 86400
    feed(engine, "auth-failed", "192.0.2.7", 1)
    clock.now += 20 * 365 * 86400
    assert engine.sweep() == []
    assert len(added(feed(engine, "auth-failed", "192.0.2.8", 5))) == 1


# -- protection ----------------------------------------------------------------

@pytest.mark.parametrize("ip", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_never_banned(ip):
    engine, _ = make(maxretry=1, distinct_users=1)
    assert feed(engine, "relay-denied", ip, 20, user_prefix="u") == []
    assert engine.bans == {}
    assert engine.stats()["ignored_protected"] == 20


def test_whitelisted_own_and_mynetworks_never_banned():
    wl, _ = Whitelist.from_lines(["198.51.100.0/24", "2001:db8:5::1"])
    engine, _ = make(maxretry=1, whitelist=wl, mynetworks=["10.0.0.0/8"],
                     own_addresses=["203.0.113.9", "2001:db8:9::25"])
    for ip in ("198.51.100.77", "10.1.2.3", "203.0.113.9", "2001:db8:5::1"):
        assert feed(engine, "auth-failed", ip, 10) == [], ip
    assert engine.bans == {}
    # 2001:db8:5::2 and 2001:db8:9::1 share a /64 with a protected address: banned on a
    # narrower prefix that holds none (issue 12 point 17), see test_ipv6_prefix_fallback_*.
    feed(engine, "auth-failed", "2001:db8:5::2", 1)
    feed(engine, "auth-failed", "2001:db8:9::1", 1)
    assert sorted(engine.bans) == ["2001:db8:5::2/127", "2001:db8:9::/123"]
    assert engine.is_protected("2001:db8:5::/64") and not engine.is_protected("203.0.113.10")
    assert len(added(engine.handle(ev("auth-failed", "203.0.113.10")))) == 1


def test_manual_ban_refuses_protected():
    wl, _ = Whitelist.from_lines(["198.51.100.7"])
    engine, _ = make(whitelist=wl, mynetworks=["10.0.0.0/8"], own_addresses=["203.0.113.9"])
    for target in ("198.51.100.7", "198.51.100.0/24", "10.9.9.9", "203.0.113.9", "127.0.0.1",
                   "::1", "0.0.0.0/0"):
        with pytest.raises(ValueError):
            engine.ban(target)
    assert engine.bans == {}


def test_set_whitelist_lifts_bans_keeps_scores():
    engine, _ = make()
    feed(engine, "auth-failed", "192.0.2.7", 5)
    feed(engine, "auth-failed", "192.0.2.8", 5)
    feed(engine, "auth-failed", "192.0.2.9", 3)
    wl, _ = Whitelist.from_lines(["192.0.2.7"])
    assert engine.set_whitelist(wl) == [BanLifted("192.0.2.7/32", "whitelisted")]
    assert set(engine.bans) == {"192.0.2.8/32"}
    assert engine.score("192.0.2.9") == 3
    assert feed(engine, "auth-failed", "192.0.2.7", 10) == []


def test_reconfigure_keeps_state_and_applies_weights():
    engine, clock = make()
    feed(engine, "auth-failed", "192.0.2.7", 5)
    feed(engine, "auth-failed", "192.0.2.8", 2)
    effects = engine.reconfigure(RelayConfig(), BanConfig(weights={"auth-failed": 3}),
                                 mynetworks=["192.0.2.7/32"])
    assert effects == [BanLifted("192.0.2.7/32", "whitelisted")]
    assert engine.score("192.0.2.8") == 6
    assert len(added(engine.handle(ev("auth-failed", "192.0.2.8")))) == 1


def test_reconfigure_prefix_change_resets_scores_keeps_bans():
    engine, _ = make()
    feed(engine, "auth-failed", "192.0.2.7", 5)
    feed(engine, "auth-failed", "192.0.2.20", 4)
    engine.reconfigure(RelayConfig(), BanConfig(ipv4_prefix=24))
    assert engine.score("192.0.2.20") == 0
    assert "192.0.2.7/32" in engine.bans
    # The old /32 ban still silences its address under the new /24 keys.
    assert feed(engine, "auth-failed", "192.0.2.7", 10) == []
    (ban,) = added(feed(engine, "auth-failed", "192.0.2.30", 5))
    assert ban.net == "192.0.2.0/24"


# -- manual bans, unban, flush, expiry ---------------------------------------------

def test_manual_ban_unban_and_flush():
    engine, clock = make(ipv6_prefix=64)
    (ban,) = added(engine.ban("2001:db8::7"))
    assert ban.net == "2001:db8::/64" and ban.source == "manual"
    assert ban.expires_at == clock.now + 3600
    (ban,) = added(engine.ban("198.51.100.0/24", duration=60))
    assert ban.expires_at == clock.now + 60
    (ban,) = added(engine.ban("::ffff:203.0.113.5", permanent=True))
    assert ban.net == "203.0.113.5/32" and ban.expires_at is None
    assert engine.handle(ev("auth-failed", "198.51.100.9")) == []
    assert engine.stats()["ignored_banned"] == 1
    assert engine.unban("2001:db8::99") == [BanLifted("2001:db8::/64", "unban")]
    assert engine.unban("2001:db8::99") == []
    lifted = engine.flush()
    assert sorted(e.net for e in lifted) == ["198.51.100.0/24", "203.0.113.5/32"]
    assert all(e.why == "flush" for e in lifted) and engine.bans == {}
    assert engine.offender_rows() == []        # manual bans do not count as offences


def test_manual_ban_rejects_bad_input():
    engine, _ = make()
    for bad in ("", "banana", "192.0.2.300", "192.0.2.0/33", "fe80::1%eth0"):
        with pytest.raises(ValueError):
            engine.ban(bad)
    with pytest.raises(ValueError):
        engine.ban("192.0.2.7", duration=0)
    with pytest.raises(ValueError):
        engine.unban("nope")


def test_unban_of_single_address_ban_under_wider_prefix():
    engine, _ = make(ipv4_prefix=24)
    engine.ban("192.0.2.7/32")
    assert engine.unban("192.0.2.7") == [BanLifted("192.0.2.7/32", "unban")]


def test_expiry_via_sweep_and_next_deadline():
    engine, clock = make(bantime=100)
    feed(engine, "auth-failed", "192.0.2.7", 5)
    clock.now += 10
    feed(engine, "auth-failed", "192.0.2.8", 5)
    first = clock.now - 10 + 100
    assert engine.next_deadline() == first
    clock.now = first - 0.001
    assert engine.sweep() == []
    clock.now = first
    assert engine.sweep() == [BanLifted("192.0.2.7/32", "expired")]
    assert engine.next_deadline() == first + 10
    engine.unban("192.0.2.8")
    assert engine.next_deadline() is None
    # After expiry the address is scored afresh.
    assert feed(engine, "auth-failed", "192.0.2.7", 4) == []


def test_load_drops_expired_and_protected_bans():
    engine, clock = make(mynetworks=["10.0.0.0/8"])
    live = Ban("192.0.2.7/32", clock.now - 10, clock.now + 50, 5, {"auth-failed": 5})
    perm = Ban("192.0.2.8/32", clock.now - 10, None)
    old = Ban("192.0.2.9/32", clock.now - 100, clock.now - 1)
    mine = Ban("10.0.0.0/24", clock.now - 10, clock.now + 50)
    effects = engine.load([], [live, perm, old, mine], [])
    assert effects == [BanLifted("192.0.2.9/32", "expired"),
                       BanLifted("10.0.0.0/24", "whitelisted")]
    assert set(engine.bans) == {"192.0.2.7/32", "192.0.2.8/32"}
    assert engine.bans["192.0.2.7/32"].expires_at == clock.now + 50
    assert engine.next_deadline() == clock.now + 50
    assert engine.handle(ev("auth-failed", "192.0.2.8")) == []
    assert engine.stats()["ignored_banned"] == 1


def test_many_bans_expire_in_one_sweep():
    engine, clock = make(bantime=60)
    for i in range(2000):
        engine.ban(f"10.{i >> 8}.{i & 255}.1")
    clock.now += 60
    assert len(engine.sweep()) == 2000
    assert engine.bans == {} and engine.next_deadline() is None


# -- properties ------------------------------------------------------------------

KINDS = st.sampled_from(["user-unknown", "auth-failed", "login-failed", "relay-denied",
                         "rejected", "stuck-session", "login"])
PROTECTED_IPS = ["198.51.100.1", "198.51.100.254", "127.0.0.1", "::1", "10.20.30.40",
                 "2001:db8:aa::1", "2001:db8:aa::ffff", "::ffff:198.51.100.3", "203.0.113.9"]
OTHER_IPS = ["192.0.2.1", "192.0.2.2", "2001:db8:bb::1", "2001:db8:bb::2"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KINDS, st.sampled_from(PROTECTED_IPS + OTHER_IPS),
                          st.sampled_from(["a", "b", "c", "d", None]),
                          st.floats(min_value=0, max_value=5000)), max_size=120),
       st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=4))
def test_property_protected_never_banned(events, maxretry, distinct):
    wl, _ = Whitelist.from_lines(["198.51.100.0/24", "2001:db8:aa::/48"])
    clock = FakeClock()
    engine = Engine(RelayConfig(), BanConfig(maxretry=maxretry, distinct_users=distinct),
                    whitelist=wl, mynetworks=["10.0.0.0/8"], own_addresses=["203.0.113.9"],
                    clock=clock)
    for kind, ip, user, step in events:
        clock.now += step
        for effect in engine.handle(ev(kind, ip, user)) + engine.sweep():
            if isinstance(effect, BanAdded):
                net = NetSet([effect.ban.net])
                assert not any(net.contains(p) for p in PROTECTED_IPS), effect.ban.net
    for net in engine.bans:
        assert not any(NetSet([net]).contains(p) for p in PROTECTED_IPS), net


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OTHER_IPS), st.integers(min_value=0, max_value=400_000)),
                max_size=80))
def test_property_score_matches_brute_force(events):
    """The engine's ban decision equals a direct count over the sliding window (times in ms)."""
    engine, clock = make(distinct_users=0, bantime=1000)
    base_ms = 1_000_000_000
    now_ms = base_ms
    history: dict[str, list[int]] = {}
    for ip, step in events:
        now_ms += step
        clock.now = now_ms / 1000
        engine.sweep()
        key = engine._key_net(engine._ip_key(ip))
        banned = key in engine.bans
        effects = engine.handle(ev("auth-failed", ip))
        if banned:
            assert effects == []
            continue
        history.setdefault(key, []).append(now_ms)
        expected = len([t for t in history[key] if t > now_ms - 600_000]) >= 5
        assert bool(added(effects)) == expected
        if expected:
            history[key] = []


# -- no nested bans (nftables interval sets cannot hold one network inside another) ----------

def test_wider_manual_ban_absorbs_the_bans_inside_it():
    engine, clock = make(bantime=3600)
    feed(engine, "user-unknown", "2001:db8:1:2::5", 5)          # auto /64, expires +3600
    engine.ban("2001:db8:1:3::9/128", duration=7200)           # manual host, expires +7200
    assert set(engine.bans) == {"2001:db8:1:2::/64", "2001:db8:1:3::9/128"}
    effects = engine.ban("2001:db8:1::/48", duration=600)
    lifted = {e.net: e.why for e in effects if isinstance(e, BanLifted)}
    assert lifted == {"2001:db8:1:2::/64": "covered", "2001:db8:1:3::9/128": "covered"}
    (ban,) = added(effects)
    assert set(engine.bans) == {"2001:db8:1::/48"}
    assert ban.expires_at == clock.now + 7200                   # never shortens a ban it absorbs


def test_ban_inside_a_wider_ban_is_refused_or_skipped():
    engine, clock = make()
    engine.ban("198.51.100.0/24")
    with pytest.raises(ValueError, match="inside the ban of 198.51.100.0/24"):
        engine.ban("198.51.100.7")
    # An offender inside it cannot score either: no second, nested ban.
    assert feed(engine, "user-unknown", "198.51.100.8", 10) == []
    assert set(engine.bans) == {"198.51.100.0/24"}


def test_host_ban_then_offender_net_ban_absorbs_it():
    engine, clock = make()
    engine.ban("2001:db8:9::1/128", duration=60)
    effects = feed(engine, "user-unknown", "2001:db8:9::2", 5)
    assert [e.net for e in effects if isinstance(e, BanLifted)] == ["2001:db8:9::1/128"]
    assert set(engine.bans) == {"2001:db8:9::/64"}


def test_distinct_user_rule_works_with_user_unknown_weight_zero():
    engine, clock = make(weights={"user-unknown": 0}, distinct_users=4, distinct_window=86400)
    effects = feed(engine, "user-unknown", "192.0.2.70", 4, clock, step=3600, user_prefix="u")
    (ban,) = added(effects)
    assert ban.reason == {"distinct-users": 4, "user-unknown": 1}
    # Without the distinct rule, weight 0 still costs no memory.
    engine, _ = make(weights={"user-unknown": 0}, distinct_users=0)
    feed(engine, "user-unknown", "192.0.2.71", 10, user_prefix="u")
    assert not engine.is_tracked("192.0.2.71")


def test_offender_rows_of_some_nets_and_history_cap_on_load():
    engine, clock = make(max_tracked=2)
    engine.load([], [], [("192.0.2.1/32", 1, 10.0), ("192.0.2.2/32", 3, 30.0),
                         ("192.0.2.3/32", 2, 20.0)])
    # Only the most recently banned offenders are kept, as in memory.
    assert sorted(engine.offender_rows()) == [("192.0.2.2/32", 3, 30.0), ("192.0.2.3/32", 2, 20.0)]
    assert engine.offender_rows(["192.0.2.3/32", "198.51.100.1/32"]) == [("192.0.2.3/32", 2, 20.0)]
