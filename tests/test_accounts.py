"""Account risk (logwatch/engine/accounts.py): windows, score, never_suspend, escalation, expiry,
hostile SASL IDs, and the per-minute counts (engine/counts.py). Pure logic: fake records."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from logwatch.engine.accounts import (
    DEFAULT_WEIGHTS,
    AccountBook,
    RiskSettings,
    network_of,
    valid_user,
)
from logwatch.engine.counts import MinuteCounts
from logwatch.engine.model import SuspensionAdded, SuspensionLifted


@dataclass
class Rcpt:
    address: str
    status: str = "sent"
    dsn: str = "2.0.0"
    relay: str = "mx.example.net[192.0.2.99]:25"
    orig_to: str = ""


@dataclass
class Msg:
    sasl_user: str
    client_ip: str
    recipients: tuple[Rcpt, ...]
    done_time: float
    host: str = "mail"
    queue_id: str = "ABC"
    sender: str = "a@example.org"
    extra: dict = field(default_factory=dict)


@dataclass
class Reject:
    sasl_user: str
    client_ip: str
    time: float
    host: str = "mail"
    sender: str = ""
    recipient: str = ""
    reason: str = "Relay access denied"
    client_name: str = "unknown"


def msg(user: str, ip: str, t: float, n: int = 1, domain: str = "example.net",
        dsn: str = "2.0.0") -> Msg:
    return Msg(user, ip, tuple(Rcpt(f"r{i}@{domain}", dsn=dsn) for i in range(n)), t)


def book(clock, **kw) -> AccountBook:
    return AccountBook(RiskSettings(**kw), clock)


def test_normal_user_stays_low(clock) -> None:
    b = book(clock)
    for _ in range(3):
        assert b.message(msg("alice@example.org", "192.0.2.1", clock.now)) == []
    row = b.view()["accounts"][0]
    assert row["user"] == "alice@example.org" and row["messages"] == 3
    assert row["score"] == pytest.approx(3 * 0.1 + 3 * 0.5)
    assert not b.suspensions


def test_burst_from_many_ips_suspends_with_why(clock) -> None:
    b = book(clock)
    effects = []
    for i in range(30):
        effects += b.message(msg("Bob", f"198.51.{i % 5}.7", clock.now + i, n=10))
    adds = [e for e in effects if isinstance(e, SuspensionAdded)]
    assert len(adds) == 1
    sus = adds[0].suspension
    assert sus.user == "bob" and sus.source == "auto" and sus.offences == 1
    assert sus.expires_at == clock.now + 3600
    assert sus.score >= 100 and {"recipients", "ips", "networks"} <= set(sus.reason)
    # Counting starts afresh after a suspension: the next messages do not add another one.
    assert b.message(msg("bob", "198.51.0.7", clock.now + 40, n=10)) == []


def test_window_slides(clock) -> None:
    b = book(clock, window=600)
    for _ in range(150):
        b.message(msg("carol", "192.0.2.1", clock.now, n=1))
    clock.advance(601)
    assert b.message(msg("carol", "192.0.2.1", clock.now, n=1)) == []
    assert b.view()["accounts"][0]["recipients"] == 1
    # Alone, 199 recipients in one window do not suspend; 200 do (0.5 each, + 0.1 a message).
    b2 = book(clock, window=600)
    got = []
    for _ in range(200):
        got += b2.message(msg("dave", "192.0.2.1", clock.now, n=1))
    assert len(got) == 1


def test_ips_and_networks_from_logins(clock) -> None:
    b = book(clock, weights={**DEFAULT_WEIGHTS, "ips": 20.0, "networks": 20.0})
    got = []
    for i in range(3):        # 2 extra IPs and networks: 2 * 20 + 2 * 20 = 80
        got += b.login("erin", f"203.0.{i}.9", clock.now)
    assert got == []
    got += b.login("erin", "203.0.2.10", clock.now)     # same /24: +20 = 100
    assert [e.suspension.reason for e in got] == [{"ips": 60.0, "networks": 40.0}]
    b = book(clock)
    for i in range(3):
        b.login("erin", f"2001:db8:{i}::1", clock.now)
    row = b.view()["accounts"][0]
    assert row["ips"] == 3 and row["networks"] == 3
    assert network_of("2001:db8:1::1") == "2001:db8:1::/64"
    assert network_of("203.0.113.9") == "203.0.113.0/24"


def test_logins_alone_reach_the_threshold(clock) -> None:
    b = book(clock)
    got = []
    for i in range(8):        # 7 * 5 + 7 * 10 = 105
        got += b.login("frank", f"10.{i}.0.1", clock.now)
    assert [type(e) for e in got] == [SuspensionAdded]


def test_bounce_ratio_and_rejects(clock) -> None:
    b = book(clock)
    b.message(msg("gina", "192.0.2.1", clock.now, n=10, dsn="5.1.1"))
    parts = b.view()["accounts"][0]["why"]
    assert parts["bounce_ratio"] == 50.0
    b.reject(Reject("gina", "192.0.2.1", clock.now))
    assert b.view()["accounts"][0]["why"]["rejects"] == 2.0
    small = book(clock)
    small.message(msg("hal", "192.0.2.1", clock.now, n=9, dsn="5.1.1"))
    assert "bounce_ratio" not in small.view()["accounts"][0]["why"]   # under the sample


def test_never_suspend(clock) -> None:
    b = book(clock, never_suspend=["Bulk@Example.org"])
    for _ in range(10):
        assert b.message(msg("bulk@example.org", "192.0.2.1", clock.now, n=100)) == []
    assert b.counters["never_suspend_over"] > 0
    assert b.view()["accounts"][0]["never_suspend"] is True
    with pytest.raises(ValueError):
        b.suspend("BULK@example.org")


def test_escalation_and_cap(clock) -> None:
    b = book(clock, suspend_time=100, suspend_growth=3, max_suspend_time=500)
    durations = []
    for _ in range(4):
        (add,) = [e for e in b.message(msg("ivan", "192.0.2.1", clock.now, n=250))]
        durations.append(add.suspension.expires_at - add.suspension.since)
        assert add.suspension.offences == len(durations)
        clock.advance(add.suspension.expires_at - clock.now)
        assert b.sweep() == [SuspensionLifted("ivan", "expired")]
    assert durations == [100, 300, 500, 500]


def test_expiry_via_deadline_and_manual(clock) -> None:
    b = book(clock)
    assert b.next_deadline() is None
    (add,) = b.suspend("Judy", 60)
    assert add.suspension.source == "manual" and add.suspension.user == "judy"
    assert b.next_deadline() == clock.now + 60
    assert b.sweep() == []
    clock.advance(60)
    assert b.sweep() == [SuspensionLifted("judy", "expired")]
    assert b.next_deadline() is None
    b.suspend("judy")
    assert b.unsuspend("JUDY") == [SuspensionLifted("judy", "unsuspend")]
    assert b.unsuspend("judy") == []
    assert b.next_deadline() is None


@pytest.mark.parametrize("name", [
    "alice OK", "alice\nbob REJECT", "alice\tOK", "", "#alice", "a\x00b", "a\x1bb",
    "x" * 300, "al\u00efce", "bob\r", "\u2028bob",
])
def test_hostile_ids_are_never_keys(clock, name: str) -> None:
    b = book(clock, suspend_score=0.01)
    assert not valid_user(name)
    assert b.message(msg(name, "192.0.2.1", clock.now, n=500)) == []
    assert b.login(name, "192.0.2.1", clock.now) == []
    assert b.reject(Reject(name, "192.0.2.1", clock.now)) == []
    assert b.accounts == {} and b.suspensions == {}
    with pytest.raises(ValueError):
        b.suspend(name)


def test_ok_alone_is_just_a_user_name(clock) -> None:
    b = book(clock, suspend_score=1)
    (add,) = b.message(msg("OK", "192.0.2.1", clock.now, n=5))
    assert add.suspension.user == "ok"


def test_bounded_memory(clock) -> None:
    b = book(clock, max_accounts=100, never_suspend=["wide"])
    for i in range(1000):
        b.login(f"u{i}", "192.0.2.1", clock.now)
    assert len(b.accounts) == 100 and b.counters["evicted"] == 900
    for i in range(5000):
        b.message(msg("wide", f"10.{i // 256 % 256}.{i % 256}.1", clock.now, domain=f"d{i}.net"))
    acc = b.accounts["wide"]
    assert len(acc.ips) == len(acc.domains) == len(acc.nets) == 256
    assert "d4999.net" in acc.domains and "d0.net" not in acc.domains   # the oldest went


def test_future_record_time_is_clamped(clock) -> None:
    b = book(clock, window=600)
    b.message(msg("kim", "192.0.2.1", clock.now + 10 * 86400, n=1))
    assert b.accounts["kim"].newest == int(clock.now // 60)


def test_load_restores_and_lifts_expired(clock) -> None:
    b = book(clock)
    (add,) = b.suspend("lee", 100)
    b.message(msg("max", "192.0.2.1", clock.now, n=4))
    rows = b.account_rows()
    b2 = book(clock, never_suspend=["nora"])
    from logwatch.engine.model import Suspension
    effects = b2.load([add.suspension, Suspension("old", 0, clock.now - 1),
                       Suspension("nora", clock.now, clock.now + 10)],
                      [("lee", 1, clock.now)], [(u, st) for u, st, _ in rows] + [("bad", "{")])
    assert effects == [SuspensionLifted("old", "expired"),
                       SuspensionLifted("nora", "never_suspend")]
    assert set(b2.suspensions) == {"lee"} and b2.next_deadline() == clock.now + 100
    assert b2.view()["accounts"][0]["recipients"] == 4
    (again,) = b2.message(msg("lee", "192.0.2.1", clock.now, n=300)) or [None]
    assert again is None            # suspended already: not again
    clock.advance(100)
    b2.sweep()
    (again,) = b2.message(msg("lee", "192.0.2.1", clock.now, n=300))
    assert again.suspension.offences == 2


def test_disabled_counts_nothing(clock) -> None:
    b = book(clock, enabled=False)
    assert b.message(msg("a", "192.0.2.1", clock.now, n=900)) == []
    assert b.accounts == {}


def test_minute_counts_top_senders(clock) -> None:
    c = MinuteCounts(top_senders=1)
    t = 120.0
    c.message(msg("", "192.0.2.1", t, n=2), t)
    c.message(msg("a", "192.0.2.1", t, n=3, dsn="5.0.0"), t + 5)
    c.message(msg("b", "192.0.2.1", t, n=1), t + 6)
    c.reject(Reject("", "192.0.2.1", t), t + 7)
    c.message(msg("a", "192.0.2.1", t + 60, n=1), t + 60)
    assert c.drain(t + 59) == []
    rows = c.drain(t + 60)
    assert sorted(rows) == sorted([
        ("messages", 120, 3.0), ("received", 120, 1.0), ("sent", 120, 2.0),
        ("recipients", 120, 6.0), ("bounces", 120, 3.0), ("rejects", 120, 1.0),
        ("sender:a", 120, 1.0), ("sender_rcpt:a", 120, 3.0)])
    assert [r[1] for r in c.drain(10**9)] and c.minutes == {}


def test_engine_wiring_sweep_deadline_and_reload(clock) -> None:
    from logwatch.daemon.config import Config
    from logwatch.engine.core import Engine

    cfg = Config()
    cfg.accounting.enabled = True
    cfg.bans.enabled = False
    engine = Engine(cfg.relay, cfg.bans, clock=clock, accounting=cfg.accounting)
    (add,) = engine.account(msg("nick", "192.0.2.1", clock.now, n=200))
    assert isinstance(add, SuspensionAdded)
    assert engine.account(Reject("nick", "192.0.2.1", clock.now)) == []
    assert engine.next_deadline() == add.suspension.expires_at
    # A reload that puts the ID into never_suspend lifts it at once.
    cfg.accounting.never_suspend = ["NICK"]
    assert engine.configure_accounting(cfg.accounting) == [
        SuspensionLifted("nick", "never_suspend")]
    assert engine.next_deadline() is None
    # Off: records are not even counted.
    engine.configure_accounting(None)
    assert engine.account(msg("olga", "192.0.2.1", clock.now, n=500)) == []
    assert "olga" not in engine.accounts.accounts


def test_partial_weights_from_config_keep_the_other_defaults() -> None:
    """accounting.weights naming one weight changes that one; the rest stay the defaults."""
    @dataclass
    class Cfg:
        weights: dict
        suspend_score: float = 50.0

    b = AccountBook(RiskSettings.from_config(Cfg({"ips": 7.0})))
    assert b.settings.suspend_score == 50.0
    assert b.weights == {**DEFAULT_WEIGHTS, "ips": 7.0}
