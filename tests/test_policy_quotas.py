"""Quotas (engine/policy/quotas.py): sliding windows, idempotency per instance, profiles,
refunds, the counters through a real store (restart), and the memory of 100,000 keys."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from logwatch.daemon.policywriter import Batch, write_batch
from logwatch.engine.policy import PolicyRequest
from logwatch.engine.policy.quotas import QuotaCheck, QuotaSpec, parse_profiles
from logwatch.state.policystore import PolicyStore
from logwatch.state.store import Store


def rcpt(instance: str, recipient: str, state: str = "RCPT", **kw: str) -> PolicyRequest:
    return PolicyRequest({"request": "smtpd_access_policy", "protocol_state": state,
                          "client_address": "192.0.2.1", "sasl_username": "Bob",
                          "sender": "bob@Example.org", "instance": instance,
                          "recipient": recipient, **kw})


def rules(check: QuotaCheck, reqs, now: float) -> list[str]:
    return [(v.rule if (v := check.decide(r, now, True)) else "-") for r in reqs]


def test_three_per_minute_defers_the_fourth_and_slides(clock) -> None:
    q = QuotaCheck([QuotaSpec("user-rcpt", "sasl_username", "recipients", 3, 60.0)])
    got = rules(q, [rcpt(f"i{i}", f"r{i}@x") for i in range(4)], clock())
    assert got == ["-", "-", "-", "quota:user-rcpt"]
    v = q.decide(rcpt("i9", "r9@x"), clock(), True)
    assert v.action.startswith("DEFER_IF_PERMIT 4.7.1")
    clock.advance(30)
    assert q.decide(rcpt("j", "r@x"), clock(), True) is not None     # still in the window
    clock.advance(31)                                                  # all 3 slid out
    assert rules(q, [rcpt(f"k{i}", f"r{i}@x") for i in range(4)], clock())[-1] == \
        "quota:user-rcpt"
    assert q.windows[0].total("bob", clock()) == 3


def test_resent_request_is_not_counted_twice(clock) -> None:
    q = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 3, 60.0),
                    QuotaSpec("m", "sender", "messages", 1, 60.0)])
    for _ in range(5):                            # Postfix asks again for the same recipient
        assert q.decide(rcpt("A", "r1@x"), clock(), True) is None
    assert q.decide(rcpt("A", "r2@x"), clock(), True) is None   # same message: 1 message
    assert q.windows[0].total("bob", clock()) == 2
    assert q.windows[1].total("bob@example.org", clock()) == 1
    assert q.decide(rcpt("B", "r1@x"), clock(), True).rule == "quota:m"   # a second message
    # policy-test (commit=False) counts nothing
    q2 = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 1, 60.0)])
    for i in range(3):
        assert q2.decide(rcpt(f"t{i}", "r"), clock(), False) is None
    assert q2.windows[0].total("bob", clock()) == 0


def test_bytes_and_end_of_message(clock) -> None:
    q = QuotaCheck([QuotaSpec("b", "sender_domain", "bytes", 1000, 3600.0, "hold"),
                    QuotaSpec("r", "client_network", "recipients", 10, 3600.0)])
    eom = rcpt("A", "", "END-OF-MESSAGE", size="600", recipient_count="4")
    assert q.decide(eom, clock(), True) is None
    assert q.decide(eom, clock(), True) is None            # resent: not counted again
    assert q.windows[0].total("example.org", clock()) == 600
    assert q.windows[1].total("192.0.2.0/24", clock()) == 4
    v = q.decide(rcpt("B", "", "END-OF-MESSAGE", size="600"), clock(), True)
    assert (v.rule, v.action.split()[0]) == ("quota:b", "HOLD")


def test_profiles_give_some_keys_other_limits(clock) -> None:
    files = {"/p": "# bulk senders\nbulk 5\nBOB unlimited\nbroken\n"}
    spec = QuotaSpec("u", "sasl_username", "recipients", 1, 60.0, profiles="/p")
    q = QuotaCheck([spec], lambda p: files[p])
    assert q.warnings and "line 4" in q.warnings[0]
    assert rules(q, [rcpt(f"i{i}", "r") for i in range(20)], clock()) == ["-"] * 20
    bulk = [rcpt(f"b{i}", "r", sasl_username="bulk") for i in range(6)]
    assert rules(q, bulk, clock()) == ["-"] * 5 + ["quota:u"]
    files["/p"] = "bulk 6\n"                     # re-read on change: bob now has the default
    q.reload_profiles(lambda p: files[p])
    assert q.decide(rcpt("b9", "r", sasl_username="bulk"), clock(), True) is None
    # unlimited keys were not counted at all: bob starts at 0 under the default limit of 1
    assert rules(q, [rcpt("x", "r"), rcpt("y", "r")], clock()) == ["-", "quota:u"]
    assert parse_profiles("a 1\nb x\n")[1] == ["line 2: expected KEY LIMIT (a number or unlimited)"]


def test_refunds(clock) -> None:
    q = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 3, 60.0),
                    QuotaSpec("m", "sasl_username", "messages", 10, 60.0)])
    for r in ("a@x", "b@x", "c@x"):
        assert q.decide(rcpt("A", r), clock(), True) is None
    assert q.decide(rcpt("B", "d@x"), clock(), True).rule == "quota:u"
    # a rejection of a recipient we never counted (d@x was deferred) refunds nothing
    assert q.refund("192.0.2.1", "d@x", clock()) == 0
    # NOQUEUE: reject: RCPT ... <b@x>: User unknown: that recipient is refunded
    assert q.refund("192.0.2.1", "B@x", clock()) == 1
    assert q.refund("192.0.2.1", "B@x", clock()) == 0        # once
    assert q.windows[0].total("bob", clock()) == 2
    assert q.decide(rcpt("B", "d@x", queue_id="4Bx7Yq3kR4z9y"), clock(), True) is None
    assert q.decide(rcpt("B", "", "END-OF-MESSAGE", queue_id="4Bx7Yq3kR4z9y"), clock(),
                    True) is None
    assert q.windows[1].total("bob", clock()) == 2
    # milter-reject of message B by its queue id: its recipient and its message count go
    assert q.refund_message("4Bx7Yq3kR4z9y", clock()) == 2
    assert q.windows[0].total("bob", clock()) == 2 and q.windows[1].total("bob", clock()) == 1
    assert q.refund_message("4Bx7Yq3kR4z9y", clock()) == 0
    assert q.refund("192.0.2.99", "a@x", clock()) == 0        # nobody we counted
    # the last recipient of transaction A rejected: A counts nothing any more
    assert q.decide(rcpt("C", "e@x"), clock(), True) is None
    clock.advance(3600)
    assert q.refund("192.0.2.1", "e@x", clock()) == 0        # too late


def test_counts_survive_a_restart_through_the_store(clock, tmp_path: Path) -> None:
    specs = [QuotaSpec("u", "sasl_username", "recipients", 3, 60.0)]
    q = QuotaCheck(specs)
    assert rules(q, [rcpt(f"i{i}", "r") for i in range(2)], clock()) == ["-", "-"]
    store = Store(tmp_path / "state.db")
    write_batch(store, None, Batch(counts=tuple(q.take_dirty_copies(1 << 62))))
    store.close()
    store = Store(tmp_path / "state.db")
    clock.advance(10)
    fresh = QuotaCheck(specs)
    assert fresh.load(PolicyStore(store).load_quota_counts(), clock()) == 1
    assert rules(fresh, [rcpt(f"j{i}", "r") for i in range(2)], clock()) == ["-", "quota:u"]
    # a changed period starts afresh
    other = QuotaCheck([QuotaSpec("u", "sasl_username", "recipients", 3, 120.0)])
    assert other.load(PolicyStore(store).load_quota_counts(), clock()) == 0
    store.close()


def test_100k_keys_are_compact(clock) -> None:
    q = QuotaCheck([QuotaSpec("ip", "client_address", "recipients", 1000, 3600.0)])
    reqs = [PolicyRequest({"protocol_state": "RCPT", "client_address":
                           f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                           "instance": f"{i:x}", "recipient": "r@x"}) for i in range(100_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in reqs:
        q.decide(r, clock(), True)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(q.windows[0].keys) == 100_000
    # counters, the idempotency/refund memory and the dirty set: well under 100 MB
    assert used < 80 * 1024 * 1024, used
    clock.advance(3600 + 900 + 1)
    q.take_dirty_copies(1 << 62)
    assert q.expire(clock()) == 100_000 and not q.instances
