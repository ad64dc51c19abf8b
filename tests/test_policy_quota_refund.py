"""Quota refunds as the log side triggers them from Postfix's own reject lines.

The generic reject rule (rules/postfix.yaml, postfix-reject) names the refused recipient of a
"Recipient address rejected" line. Postfix logs the quota's own DEFER of a 4th recipient that
way: it must refund nothing (that recipient was never counted). A check after the policy
service refusing a counted recipient refunds exactly that one. Found with real Postfix
(tests/test_policy_postfix.py): before, such lines refunded the recipient counted before them.
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
    # "reject: RCPT from ...[IP]: 450 4.7.1 <q3@dest.test>: Recipient address rejected: ..."
    assert q.refund(IP, "q3@dest.test", now + 1) == 0
    assert q.decide(rcpt(4), now + 2, True) is not None       # still over the limit


def test_a_later_refusal_of_a_counted_recipient_is_refunded() -> None:
    q, now = quotas(), 1000.0
    assert q.decide(rcpt(0), now, True) is None
    assert q.decide(rcpt(1), now, True) is None
    # A check after the policy service refused q1 (the line names it): its count comes back.
    assert q.refund(IP, "Q1@dest.test", now + 1) == 1
    assert q.decide(rcpt(2), now + 2, True) is None
    assert q.decide(rcpt(3), now + 2, True) is None
    assert q.decide(rcpt(4), now + 2, True) is not None
