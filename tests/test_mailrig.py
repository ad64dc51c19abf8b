"""The submission rig issue 15's end-to-end tests stand on (tests/mailrig.py), proven alone.

Authenticated users submit from several client addresses; the log shows what the accounting
must correlate; a suspension written to the check_sasl_access table makes Postfix itself hold
or refuse that user's next message while others still send.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from mailrig import SubmissionRig, submission_rig
from postfix_helpers import send_mail, smtp_session

pytestmark = pytest.mark.needs("root", "postfix", "postmap", "dovecot")

USERS = {"alice": "alice-pw", "victim": "victim-pw"}


@pytest.fixture(scope="module")
def rig() -> Iterator[SubmissionRig]:
    with submission_rig(USERS) as running:
        yield running


def test_three_messages_leave_three_complete_log_records(rig: SubmissionRig) -> None:
    ids = []
    for n in range(3):
        with smtp_session(rig.inst, rig.client("alice", ip=11)) as smtp:
            sent = send_mail(smtp, "alice@example.org", [f"r{n}@remote.example"])
        assert sent.accepted() and sent.queue_id, sent
        ids.append(sent.queue_id)
    log = rig.inst.wait_log(f"{ids[-1]}: removed")
    for n, qid in enumerate(ids):
        assert (f"{qid}: client=unknown[198.51.100.11], sasl_method=PLAIN, "
                "sasl_username=alice") in log
        assert f"{qid}: from=<alice@example.org>, size=" in log
        assert re.search(rf"{qid}: to=<r{n}@remote\.example>, relay=none, .*status=sent", log)
        rig.inst.wait_log(f"{qid}: removed")


def test_suspension_in_the_table_holds_then_refuses_the_next_message(
        rig: SubmissionRig) -> None:
    for ip in range(21, 26):        # five client addresses, one message each
        with smtp_session(rig.inst, rig.client("victim", ip=ip)) as smtp:
            assert send_mail(smtp, "victim@example.org", ["x@remote.example"]).queue_id
    rig.set_sasl_access({"victim": "HOLD suspended by test"})
    with smtp_session(rig.inst, rig.client("victim", ip=26)) as smtp:
        held = send_mail(smtp, "victim@example.org", ["y@remote.example"])
    assert held.queue_id and held.queue_id in rig.inst.held(), held
    rig.set_sasl_access({"victim": "REJECT 5.7.1 suspended by test"})
    with smtp_session(rig.inst, rig.client("victim", ip=27)) as smtp:
        refused = send_mail(smtp, "victim@example.org", ["z@remote.example"])
    assert refused.rcpt["z@remote.example"] == (
        554, "5.7.1 <victim>: SASL login name rejected: suspended by test"), refused
    with smtp_session(rig.inst, rig.client("alice", ip=28)) as smtp:
        assert send_mail(smtp, "alice@example.org", ["w@remote.example"]).accepted()
    # Without a login, relaying is refused; mail to the inbound domain is not.
    with smtp_session(rig.inst, rig.client(None, ip=29)) as smtp:
        anon = send_mail(smtp, "x@example.net", ["v@remote.example", "v@dest.test"])
    assert [c for c, _ in anon.rcpt.values()] == [554, 250], anon
