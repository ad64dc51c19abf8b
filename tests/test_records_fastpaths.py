"""The per-record fast paths after the correlator give what the plain definitions give: stats-log
lines byte for byte (hostile values included), store rows in order, the risk engine's scores,
suspensions, windows and counts; Daemon.on_record_batch applies a batch's effects once."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logwatch.daemon import statslog
from logwatch.daemon.config import AccountingConfig, BanConfig, RelayConfig
from logwatch.daemon.statslog import format_record, format_records
from logwatch.engine import accountkeys
from logwatch.engine import accounts as acc_mod
from logwatch.engine.accounts import (
    Account,
    AccountBook,
    RiskSettings,
    key_of,
    network_of,
    user_key,
    valid_user,
)
from logwatch.engine.core import Engine
from logwatch.engine.messages import MessageRecord, Recipient
from logwatch.engine.model import SuspensionAdded
from logwatch.parsing.events import normalize_ip
from logwatch.state import accounting as rows
from logwatch.state.store import Store

T = 1795305600.0


# The stats-log line by its definition: every value escaped, fields TAB-joined (the general
# path the fast ones must equal).
reference_line = statslog._format_escaped


EVIL = st.sampled_from(["\t", "\n", "\\", "\r", "\x00", "\x7f", "\x85", "\u2028", "\u2029", "ä",
                        "\ud800", "=", ":", "\tauth_id:victim", "\nseq:1\t", "\\t", '"'])
VALUE = st.one_of(st.sampled_from(["", "mx1", "alice", "a@example.org", "PLAIN", "sent"]),
                  st.lists(st.one_of(EVIL, st.text(max_size=4)), max_size=4).map("".join))
TIME = st.one_of(st.just(0.0), st.just(T), st.just(T + 0.5), st.floats(T - 1e5, T + 1e5))


@st.composite
def records(draw: Any, seq: int = 1) -> MessageRecord:
    rcpts = tuple(Recipient(draw(VALUE), draw(VALUE), draw(VALUE), draw(VALUE), draw(VALUE))
                  for _ in range(draw(st.integers(0, 5))))
    connect = draw(TIME)
    eom = draw(st.one_of(st.just(connect), TIME))
    done = draw(st.one_of(st.just(eom), TIME))
    return MessageRecord(draw(VALUE), draw(VALUE), draw(VALUE), draw(VALUE), draw(VALUE),
                         draw(VALUE), draw(VALUE), rcpts, draw(st.integers(0, 10**9)),
                         len(rcpts), draw(VALUE), connect, eom, done, draw(VALUE),
                         draw(st.integers(1, 10**12)))


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), max_size=6))
def test_stats_lines_are_the_definition_byte_for_byte(batch: list[MessageRecord]) -> None:
    expected = "".join(map(reference_line, batch))
    assert "".join(map(format_record, batch)) == expected
    data = format_records(batch)
    assert data == expected.encode("utf-8", "backslashreplace")
    assert data.count(b"\n") == len(batch)          # no value forges a line ...
    for line, r in zip(data.split(b"\n")[:-1], batch, strict=True):   # ... nor a field
        assert line.count(b"\t") == 14 + 2 * len(r.recipients)


def test_stats_lines_of_1_to_5_recipients_and_differing_times() -> None:
    for n in range(6):
        for times in ((T, T, T), (T, T + 1, T + 1), (T, T, T + 61), (0.0, 0.0, T), (T + .5, T, T)):
            r = MessageRecord("mx1", "Q1", "192.0.2.1", "c.example", "bob", "PLAIN", "s@x",
                              tuple(Recipient(f"r{i}@x", "sent", "2.0.0", "mx", "")
                                    for i in range(n)), 10, n, "<m@x>", *times, "delivered", 7)
            assert format_record(r) == reference_line(r)
            assert format_records([r, r]) == 2 * reference_line(r).encode()


# -- store rows ------------------------------------------------------------------------------

def plain_rows(batches: list[list[MessageRecord]]) -> list[tuple[Any, ...]]:
    """The acct_records rows of one executemany per batch (the plain way), in rowid order."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE acct_records (node TEXT NOT NULL, seq BIGINT NOT NULL, done_time "
               "DOUBLE PRECISION NOT NULL, sasl_user TEXT NOT NULL, client_ip TEXT NOT NULL, "
               "record TEXT NOT NULL, PRIMARY KEY (node, seq))")
    for batch in batches:
        db.executemany("INSERT INTO acct_records VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, seq) "
                       "DO NOTHING", [("", r.seq, r.done_time, r.sasl_user, r.client_ip,
                                       rows.record_json(r)) for r in batch])
    return db.execute("SELECT rowid, * FROM acct_records ORDER BY rowid").fetchall()


def message(seq: int, **kw: Any) -> MessageRecord:
    values: dict[str, Any] = dict(
        host="mx1", queue_id=f"Q{seq}", client_ip="192.0.2.1", client_name="c", sasl_user="bob",
        sasl_method="PLAIN", sender="s@x", recipients=(Recipient("r@x", "sent", "2.0.0", "mx",
                                                                  ""),),
        size=1, nrcpt=1, message_id="<m>", connect_time=T, eom_time=T, done_time=T + seq,
        outcome="delivered", seq=seq)
    values.update(kw)
    return MessageRecord(**values)


@pytest.mark.parametrize("sizes", [[0], [1], [99], [100], [101], [250, 3], [100, 100]])
def test_store_rows_are_one_executemany_s_rows(tmp_path: Path, sizes: list[int]) -> None:
    seq, batches = 0, []
    for size in sizes:
        batch = [message(seq + i + 1, sender="e\"v\\il\t\u2028" if i % 7 == 0 else "s@x")
                 for i in range(size)]
        if batch:         # a record saved again (a retried transaction) is not a new row
            batch.insert(len(batch) // 2, batch[0])
        seq += size
        batches.append(batch)
    store = Store(tmp_path / "state.db")
    for batch in batches:
        rows.save(store, [], [], batch, seq + 1, 0)
    got = store.db.execute("SELECT rowid, node, seq, done_time, sasl_user, client_ip, record "
                           "FROM acct_records ORDER BY rowid").fetchall()
    assert got == plain_rows(batches)
    assert [r.seq for r in rows.records_after(store, 0)] == list(range(1, seq + 1))
    store.close()


# -- the risk engine ---------------------------------------------------------------------------

def test_key_of_is_valid_user_then_user_key() -> None:
    for user in ["Alice", "alice", "", " a", "a b", "#x", "ä", "x" * 256, "x" * 257, "a\tb",
                 "BOB@Example.ORG", None, 5, "a\x00"]:
        expected = user_key(user) if valid_user(user) else ""   # type: ignore[arg-type]
        assert key_of(user) == expected
        assert key_of(user) == expected         # memoised
    accountkeys._KEYS.clear()
    accountkeys._IPS.clear()
    assert key_of("y" * 100_000) == "" and accountkeys._ip_and_net("1" * 100_000) is None
    assert not accountkeys._KEYS and not accountkeys._IPS    # hostile lengths are not kept


@pytest.mark.parametrize("text", ["192.0.2.1", "0.0.0.0", "255.255.255.255", "10.1.2.3",
                                  "01.2.3.4", "1.2.3", "256.1.1.1", "::ffff:192.0.2.9",
                                  "2001:db8::1", "2001:DB8:0::1", "192.0.2.1 ", "٣.1.1.1"])
def test_client_networks_are_ipaddress_s(text: str) -> None:
    accountkeys._IPS.clear()
    ip = normalize_ip(text)
    found = accountkeys._ip_and_net(text)
    if ip is None:
        assert found is None
        return
    prefix = 24 if ":" not in ip else 64
    assert found == (ip, str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False)))
    assert network_of(ip) == found[1]


def reference_prune(acc: Account, cutoff: int) -> None:
    """Account.prune() without its shortcut."""
    for minute in [m for m in acc.minutes if m < cutoff]:
        for i, n in enumerate(acc.minutes.pop(minute)):
            acc.totals[i] -= n
    for seen in (acc.domains, acc.ips, acc.nets):
        while seen and next(iter(seen.values())) < cutoff:
            del seen[next(iter(seen))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=40))
def test_prune_with_minutes_out_of_order_is_the_full_scan(ops: list[tuple[bool, int]]) -> None:
    fast, slow = Account(), Account()
    for is_prune, minute in ops:
        for acc in (fast, slow):
            if is_prune:
                (acc.prune if acc is fast else lambda c, a=acc: reference_prune(a, c))(minute)
            else:
                acc.slot(minute)[0] += 1
                acc.totals[0] += 1
                acc_mod._touch(acc.ips, f"192.0.2.{minute}", minute)
        assert (fast.minutes, fast.totals, fast.ips) == (slow.minutes, slow.totals, slow.ips)
        assert fast.oldest == min(fast.minutes, default=acc_mod._NEVER)
    assert Account.from_json(fast.as_json()).oldest == fast.oldest


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(totals=[1, 1, 0, 0, 0], weights=[0.1, 0.5, 0.2, float("inf"), 10.0, 50.0, 2.0], ips=1,
         delta=None)
@given(totals=st.lists(st.integers(0, 400), min_size=5, max_size=5),
       weights=st.lists(st.sampled_from([0.0, 0.1, 0.3333, 0.5, 1.0005, 2.0, 7.77, 50.0,
                                         float("inf")]),
                        min_size=7, max_size=7),
       ips=st.integers(0, 5), delta=st.sampled_from([-0.002, -0.0005, 0.0, 0.0004, 0.001, None]))
def test_suspension_exactly_at_the_rounded_score(totals: list[int], weights: list[float],
                                                 ips: int, delta: float | None) -> None:
    book = AccountBook(RiskSettings(weights=dict(zip(acc_mod.WEIGHT_NAMES, weights, strict=True)),
                                    min_bounce_sample=1), clock=lambda: T)
    acc = Account(totals=list(totals))
    acc.ips = {f"192.0.2.{i}": 1 for i in range(ips)}
    exact = sum(book.components(acc).values())
    # Just under, at or over the exact score; or far over it (an infinite weight times 0: NaN)
    book.settings.suspend_score = exact + delta if delta is not None else 1e9
    effects = book._judge("bob", acc)
    assert bool(effects) == (not exact < book.settings.suspend_score)     # NaN suspends


def engine(**kw: Any) -> Engine:
    return Engine(RelayConfig(), BanConfig(), clock=lambda: T + 3600,
                  accounting=AccountingConfig(enabled=True, **kw))


def burst() -> list[Any]:
    """Records and rejects of a few IDs (one compromised), odd values among them."""
    out: list[Any] = []
    for i in range(400):
        user = ["alice", "Mallory", "", "bad user", "x" * 300][i % 5]
        rcpts = tuple(Recipient(f"u{i}@d{i % 9}.example", "bounced" if i % 4 else "sent",
                                "5.1.1" if i % 4 else "2.0.0", "mx", "") for _ in range(i % 4))
        out.append(message(i + 1, sasl_user=user, recipients=rcpts, nrcpt=len(rcpts),
                           client_ip=f"198.51.{i % 7}.{i % 200}" if i % 11 else "2001:db8::5",
                           done_time=T + i * 7.5 if i % 13 else T + 9999))
        if i % 17 == 0:
            out.append(SimpleNamespace(host="mx1", time=T + i * 7.5, client_ip="192.0.2.77",
                                       client_name="", sender="", recipient="", reason="",
                                       sasl_user="mallory"))
    return out


def test_a_batch_is_its_records_one_by_one() -> None:
    items = burst()
    one, many = engine(), engine()
    effects_one = [e for item in items for e in one.account(item)]
    effects_many = many.account_batch(items[:150]) + many.account_batch(items[150:])
    assert [type(e) for e in effects_one] == [type(e) for e in effects_many]
    assert any(isinstance(e, SuspensionAdded) for e in effects_many)
    assert effects_one == effects_many
    assert one.accounts.view(None) == many.accounts.view(None)
    assert one.accounts.account_rows() == many.accounts.account_rows()
    assert one.accounts.stats() == many.accounts.stats()
    assert one.counts.drain(float("inf")) == many.counts.drain(float("inf"))


def test_a_batch_does_nothing_with_accounting_off() -> None:
    off = Engine(RelayConfig(), BanConfig(), clock=lambda: T)
    assert off.account_batch(burst()) == [] and off.counts.minutes == {}


def test_recipients_without_a_dsn_count_no_bounce() -> None:
    e = engine()
    rec = SimpleNamespace(sasl_user="bob", client_ip="192.0.2.1", done_time=T,
                          recipients=(SimpleNamespace(address="a@x", status="sent"),
                                      SimpleNamespace(address="b@y", status="sent", dsn="5.0.0")))
    assert e.account_batch([rec]) == []
    assert e.counts.drain(float("inf")) == [
        ("messages", 1795305600, 1.0), ("sent", 1795305600, 1.0),
        ("recipients", 1795305600, 2.0), ("bounces", 1795305600, 1.0),
        ("sender:bob", 1795305600, 1.0), ("sender_rcpt:bob", 1795305600, 2.0)]


def test_on_record_batch_applies_once_and_publishes_once() -> None:
    from logwatch.daemon.app import Daemon

    applied: list[list[Any]] = []
    published: list[list[Any]] = []
    fake = SimpleNamespace(engine=engine(), effects=SimpleNamespace(apply=applied.append),
                           fleet=SimpleNamespace(publish_risk=published.append),
                           schedule_engine=lambda: applied.append(["scheduled"]))
    fake.on_record_batch = lambda recs: Daemon.on_record_batch(fake, recs)  # type: ignore
    items = burst()
    Daemon.on_record_batch(fake, items)                                     # type: ignore
    assert len(published) == 1 and published[0] == items
    assert len(applied) == 2 and applied[1] == ["scheduled"]
    assert applied[0] == engine().account_batch(items)
    Daemon.on_records(fake, iter(items[:3]))                                # type: ignore
    assert published[1] == items[:3]
