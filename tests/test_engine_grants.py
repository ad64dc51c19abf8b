"""Relay grants in the pure engine (clock injected), and reading mynetworks from real postconf."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from conftest import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.effectors.postfixconf import parse_mynetworks, read_mynetworks
from logwatch.engine.core import Engine
from logwatch.engine.model import Grant, GrantAdded, GrantRevoked
from logwatch.parsing.events import Event


def login(ip: str, user: str | None = "bob", service: str | None = "imap",
          kind: str = "login") -> Event:
    return Event(datetime(2024, 1, 1), kind, ip, user, service, "dovecot", "test", None)


def make(mynetworks=(), **relay) -> tuple[Engine, FakeClock]:
    clock = FakeClock()
    return Engine(RelayConfig(**relay), BanConfig(), mynetworks=mynetworks, clock=clock), clock


def test_login_creates_grant():
    engine, clock = make()
    (effect,) = engine.handle(login("192.0.2.7"))
    assert effect == GrantAdded(Grant("192.0.2.7", "bob", "imap", clock.now, clock.now + 1800),
                                refreshed=False)
    assert engine.grants["192.0.2.7"].expires_at == clock.now + 1800
    assert engine.next_deadline() == clock.now + 1800


def test_refresh_extends_and_is_marked():
    engine, clock = make(grace=100)
    start = clock.now
    engine.handle(login("192.0.2.7"))
    clock.now += 60
    (effect,) = engine.handle(login("192.0.2.7", user="alice", service="pop3"))
    assert effect.refreshed is True
    assert effect.grant == Grant("192.0.2.7", "alice", "pop3", start + 60, start + 160)
    assert engine.next_deadline() == start + 160
    clock.now = start + 100                 # the first expiry has passed: nothing happens
    assert engine.sweep() == []
    clock.now = start + 160
    assert engine.sweep() == [GrantRevoked("192.0.2.7", "expired")]
    assert engine.grants == {} and engine.next_deadline() is None


def test_expiry_boundary():
    engine, clock = make(grace=100)
    engine.handle(login("192.0.2.7"))
    clock.now += 99.999
    assert engine.sweep() == []
    clock.now += 0.001
    assert engine.sweep() == [GrantRevoked("192.0.2.7", "expired")]


def test_next_deadline_orders_many_grants():
    engine, clock = make(grace=1000)
    start = clock.now
    for i in range(10):
        engine.handle(login(f"192.0.2.{i}"))
        clock.now += 10
    engine.revoke("192.0.2.0")
    assert engine.next_deadline() == start + 1010
    clock.now = start + 1045
    assert [e.ip for e in engine.sweep()] == ["192.0.2.1", "192.0.2.2", "192.0.2.3",
                                              "192.0.2.4"]
    assert engine.next_deadline() == start + 1050


def test_services_filter():
    engine, _ = make(services=["pop3"])
    assert engine.handle(login("192.0.2.7", service="imap")) == []
    assert engine.handle(login("192.0.2.7", service=None)) == []
    assert len(engine.handle(login("192.0.2.7", service="POP3"))) == 1


def test_default_services_pop3_and_imap():
    engine, _ = make()
    assert len(engine.handle(login("192.0.2.1", service="pop3"))) == 1
    assert len(engine.handle(login("192.0.2.2", service="imap"))) == 1
    assert engine.handle(login("192.0.2.3", service="smtp")) == []


def test_smtp_auth_option():
    engine, _ = make()
    assert engine.handle(login("192.0.2.7", service="smtp", kind="auth")) == []
    engine, _ = make(smtp_auth=True)
    (effect,) = engine.handle(login("192.0.2.7", service="smtp", kind="auth"))
    assert effect.grant.service == "smtp"


def test_relay_disabled_grants_nothing():
    engine, _ = make(enabled=False)
    assert engine.handle(login("192.0.2.7")) == []


def test_mynetworks_and_exclude_never_granted():
    engine, _ = make(mynetworks=["192.0.2.0/24", "2001:db8::/32"], exclude=["198.51.100.0/25"])
    for ip in ("192.0.2.7", "2001:db8:1::1", "198.51.100.1", "198.51.100.127"):
        assert engine.handle(login(ip)) == [], ip
    assert len(engine.handle(login("198.51.100.128"))) == 1
    assert set(engine.grants) == {"198.51.100.128"}
    for ip in ("192.0.2.9", "198.51.100.3", "::ffff:192.0.2.9"):
        with pytest.raises(ValueError):
            engine.grant(ip)
    assert engine.stats()["grants_excluded"] == 4


def test_ipv6_and_mapped_addresses():
    engine, _ = make()
    engine.handle(login("2001:db8::1"))
    (effect,) = engine.grant("::ffff:203.0.113.5")
    assert effect.grant.ip == "203.0.113.5"
    (effect,) = engine.grant("2001:DB8:0:0::0:2")
    assert effect.grant.ip == "2001:db8::2"
    assert set(engine.grants) == {"2001:db8::1", "203.0.113.5", "2001:db8::2"}


def test_manual_grant_and_revoke():
    engine, clock = make()
    (effect,) = engine.grant("192.0.2.7", duration=60, user="carol")
    assert effect.grant.expires_at == clock.now + 60 and effect.grant.service == "manual"
    assert effect.refreshed is False
    (effect,) = engine.grant("192.0.2.7")        # explicit re-grant sets the new expiry
    assert effect.refreshed and effect.grant.expires_at == clock.now + 1800
    assert engine.revoke("192.0.2.7") == [GrantRevoked("192.0.2.7", "revoked")]
    assert engine.revoke("192.0.2.7") == []
    assert engine.next_deadline() is None
    for bad in ("", "nope", "192.0.2.256", "fe80::1%eth0"):
        with pytest.raises(ValueError):
            engine.grant(bad)
        with pytest.raises(ValueError):
            engine.revoke(bad)
    with pytest.raises(ValueError):
        engine.grant("192.0.2.8", duration=-5)


def test_login_does_not_shorten_a_longer_manual_grant():
    engine, clock = make(grace=100)
    engine.grant("192.0.2.7", duration=10_000)
    (effect,) = engine.handle(login("192.0.2.7"))
    assert effect.refreshed and effect.grant.expires_at == clock.now + 10_000


def test_load_drops_expired_keeps_original_expiry():
    engine, clock = make(mynetworks=["10.0.0.0/8"])
    live = Grant("192.0.2.7", "bob", "imap", clock.now - 100, clock.now + 500)
    expired = Grant("192.0.2.8", "eve", "pop3", clock.now - 2000, clock.now - 200)
    edge = Grant("192.0.2.9", "eve", "pop3", clock.now - 1800, clock.now)
    inside = Grant("10.1.1.1", "amy", "imap", clock.now - 10, clock.now + 10)
    effects = engine.load([live, expired, edge, inside], [], [])
    assert effects == [GrantRevoked("192.0.2.8", "expired"), GrantRevoked("192.0.2.9", "expired"),
                       GrantRevoked("10.1.1.1", "excluded")]
    assert engine.grants == {"192.0.2.7": live}
    assert engine.next_deadline() == clock.now + 500
    (effect,) = engine.handle(login("192.0.2.7"))
    assert effect.refreshed


def test_reconfigure_exclusion_revokes_and_keeps_others():
    engine, _ = make()
    engine.handle(login("192.0.2.7"))
    engine.handle(login("198.51.100.7"))
    effects = engine.reconfigure(RelayConfig(exclude=["192.0.2.0/24"]), BanConfig())
    assert effects == [GrantRevoked("192.0.2.7", "excluded")]
    assert set(engine.grants) == {"198.51.100.7"}
    effects = engine.reconfigure(RelayConfig(), BanConfig(), mynetworks=["198.51.100.0/24"])
    assert effects == [GrantRevoked("198.51.100.7", "excluded")]


def test_flush_keeps_grants():
    engine, _ = make()
    engine.handle(login("192.0.2.7"))
    engine.ban("198.51.100.1")
    assert [e.net for e in engine.flush()] == ["198.51.100.1/32"]
    assert set(engine.grants) == {"192.0.2.7"}


def test_heap_stays_bounded_under_refreshes():
    engine, clock = make(grace=100)
    for _ in range(20_000):
        engine.handle(login("192.0.2.7"))
        clock.now += 0.01
    assert len(engine._heap) <= 2 * len(engine.grants) + 1025


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1",
                                           "10.0.0.1"]),
                          st.floats(min_value=0, max_value=3000),
                          st.booleans()), max_size=60))
def test_property_grants_never_outlive_grace(steps):
    engine, clock = make(grace=1800, mynetworks=["10.0.0.0/8"])
    last_login: dict[str, float] = {}
    for ip, step, do_sweep in steps:
        clock.now += step
        if do_sweep:
            engine.sweep()
            # After a sweep no grant is past its expiry.
            assert all(g.expires_at > clock.now for g in engine.grants.values())
        engine.handle(login(ip))
        if ip != "10.0.0.1":
            last_login[ip] = clock.now
        for gip, g in engine.grants.items():
            assert g.expires_at == last_login[gip] + 1800
        assert "10.0.0.1" not in engine.grants
        deadline = engine.next_deadline()
        if engine.grants:
            assert deadline == min(g.expires_at for g in engine.grants.values())


# -- postconf ------------------------------------------------------------------

def test_parse_mynetworks_postfix_syntax():
    cidrs, skipped = parse_mynetworks(
        "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128,192.168.1.0/24\n"
        "  hash:/etc/postfix/network_table [2001:DB8::]/64 10.1.2.3")
    assert cidrs == ["127.0.0.0/8", "::1/128", "192.168.1.0/24", "2001:db8::/64", "10.1.2.3/32"]
    assert skipped == ["hash:/etc/postfix/network_table"]


POSTCONF = shutil.which("postconf") or shutil.which("postconf", path="/usr/sbin")


@pytest.mark.needs("postconf")
def test_read_mynetworks_real_postconf(tmp_path: Path):
    (tmp_path / "main.cf").write_text(
        "mynetworks = 127.0.0.0/8 [::1]/128, 192.0.2.0/24 cidr:/etc/postfix/nets.cidr\n")
    (tmp_path / "master.cf").write_text("")
    assert read_mynetworks(str(tmp_path)) == ["127.0.0.0/8", "::1/128", "192.0.2.0/24"]


@pytest.mark.needs("postconf")
def test_read_mynetworks_expands_references(tmp_path: Path):
    (tmp_path / "main.cf").write_text("office = 198.51.100.0/24\n"
                                      "mynetworks = 127.0.0.0/8 $office\n")
    (tmp_path / "master.cf").write_text("")
    assert read_mynetworks(str(tmp_path)) == ["127.0.0.0/8", "198.51.100.0/24"]


@pytest.mark.needs("postconf")
def test_read_mynetworks_failures(tmp_path: Path):
    assert read_mynetworks(str(tmp_path / "missing")) is None     # postconf exits non-zero
    assert read_mynetworks(postconf="no-such-postconf-binary") is None


def test_engine_uses_postconf_networks_for_both_grants_and_bans():
    cidrs, _ = parse_mynetworks("192.0.2.0/24 [2001:db8::]/64")
    engine, _ = make(mynetworks=cidrs)
    assert engine.handle(login("2001:db8::5")) == []
    with pytest.raises(ValueError):
        engine.ban("192.0.2.9")
