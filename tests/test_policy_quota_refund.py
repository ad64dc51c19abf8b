"""Quota refunds against what Postfix logs: a refusal by the quota itself refunds nothing.

Postfix logs the quota's own DEFER of a 4th recipient as `reject: RCPT ... 450 4.7.1`, which
the log side turns into a refund of "the client's newest request" (the generic reject rule
carries no recipient). Found with real Postfix (tests/test_policy_postfix.py): before the fix,
that refund took back the 3rd recipient, so every other recipient over the limit passed.
"""

from __future__ import annotations

from logwatch.engine.policy.quotas import QuotaCheck, QuotaSpec
from logwatch.engine.policy.request import PolicyRequest

IP = "203.0.113.40"


def rcpt(n: int, instance: str = "1a.2b.3c.0") -> PolicyRequest:
    return PolicyRequest({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                          "instance": instance, "client_address": IP,
                          "sasl_username": "quser", "recipient": f"q{n}@dest.test"})


def quotas() -> QuotaCheck:
    return QuotaCheck([QuotaSpec("user-rcpt", "sasl_username", "recipients", 3, 60.0)])


def test_refusal_by_the_quota_refunds_nothing() -> None:
    q, now = quotas(), 1000.0
    assert [q.decide(rcpt(n), now, True) for n in range(3)] == [None, None, None]
    refused = q.decide(rcpt(3), now, True)
    assert refused is not None and refused.rule == "quota:user-rcpt"
    # The log side: "reject: RCPT from ...[IP]: 450 4.7.1 <q3@dest.test>", no recipient.
    assert q.refund(IP, None, now + 1) == 0
    assert q.decide(rcpt(4), now + 2, True) is not None       # still over the limit


def test_a_later_rejection_of_a_counted_recipient_is_still_refunded() -> None:
    q, now = quotas(), 1000.0
    assert q.decide(rcpt(0), now, True) is None
    assert q.decide(rcpt(1), now, True) is None
    # A restriction after the policy service refused q1: its count comes back.
    assert q.refund(IP, None, now + 1) == 1
    assert q.decide(rcpt(2), now + 2, True) is None
    assert q.decide(rcpt(3), now + 2, True) is None
    assert q.decide(rcpt(4), now + 2, True) is not None


def test_policy_test_mode_records_nothing() -> None:
    q, now = quotas(), 1000.0
    for n in range(3):
        q.decide(rcpt(n), now, True)
    assert q.decide(rcpt(3, "other.0"), now, False) is not None
    assert q.refund(IP, None, now + 1) == 1       # the newest committed request: q2
