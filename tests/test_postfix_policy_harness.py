"""The real-Postfix harness the policy and accounting tests stand on, proven with postfwd.

One private Postfix (tests/postfix_helpers.py) asks a private postfwd2 (a rate limit of 3
recipients per client address and minute, plus HOLD and end-of-data rules) through
check_policy_service, authenticates through a private Dovecot, consults a check_sasl_access
hash table built by the real postmap, and is driven by smtplib with XCLIENT.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot_helpers import dovecot_sasl
from postfix_helpers import (
    Client,
    MailOptions,
    PolicyHook,
    PostfixInstance,
    postfix_env,
    postfix_instance,
    send_mail,
    smtp_session,
)
from postfwd_helpers import RATE_RULE, postfwd_server

pytestmark = pytest.mark.needs("root", "postfix", "postmap", "postfwd2", "dovecot")

RULES = "\n".join([
    "id=EOD-TEST; protocol_state==END-OF-MESSAGE; sender==eod@example.org; "
    "action=REJECT 5.7.1 refused at end of data",
    "id=HOLD-TEST; protocol_state==RCPT; sender==hold@example.org; action=HOLD held by test",
    RATE_RULE,
])
USERS = {"alice": "alice-pw", "mallory": "mallory-pw"}
INBOUND = "dest.test"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixInstance]:
    top = tmp_path_factory.mktemp("pfharness")
    os.chmod(top, 0o755)
    table = top / "sasl-access"
    table.write_text("mallory REJECT 5.7.1 account blocked by test\n")
    cfdir = top / "pfcf"
    cfdir.mkdir()
    (cfdir / "main.cf").write_text("compatibility_level = 3.6\n")
    subprocess.run(["postmap", f"hash:{table}"], check=True, env=postfix_env(str(cfdir)))
    with dovecot_sasl(USERS) as sasl, postfwd_server(RULES) as pfw:
        opts = MailOptions(policy=PolicyHook(pfw.endpoint, at_end_of_data=True), sasl=sasl,
                           sasl_access=f"hash:{table}", relay_domains=INBOUND)
        with postfix_instance(options=opts) as running:
            yield running


def test_over_quota_client_is_deferred_at_the_fourth_recipient(inst: PostfixInstance) -> None:
    rcpts = [f"u{i}@{INBOUND}" for i in range(4)]
    who = Client(addr="198.51.100.7", name="mail.example.org", helo="mail.example.org")
    with smtp_session(inst, who) as smtp:
        sent = send_mail(smtp, "someone@example.org", rcpts)
    codes = [sent.rcpt[r][0] for r in rcpts]
    assert codes == [250, 250, 250, 450], sent
    assert sent.rcpt[rcpts[3]][1].startswith("4.7.1 ") and "over quota" in sent.rcpt[rcpts[3]][1]
    assert sent.data is not None and sent.data[0] == 250 and sent.queue_id, sent
    log = inst.wait_log(f"{sent.queue_id}: removed")
    # The XCLIENT identity is what Postfix logs and what the policy server counted.
    assert f"{sent.queue_id}: client=mail.example.org[198.51.100.7]" in log
    # The queue file is open since the first accepted RCPT: the reject carries the queue id.
    assert (f"{sent.queue_id}: reject: RCPT from mail.example.org[198.51.100.7]: 450 4.7.1 "
            f"<{rcpts[3]}>") in log
    # The count is per client address: another one is not deferred.
    with smtp_session(inst, Client(addr="198.51.100.8", name="mx.example.com")) as smtp:
        other = send_mail(smtp, "someone@example.com", [f"v@{INBOUND}"])
    assert other.accepted() == [f"v@{INBOUND}"], other


def test_end_of_data_policy_and_hold(inst: PostfixInstance) -> None:
    with smtp_session(inst, Client(addr="198.51.100.20", name="a.example.org")) as smtp:
        refused = send_mail(smtp, "eod@example.org", [f"w@{INBOUND}"])
        held = send_mail(smtp, "hold@example.org", [f"h@{INBOUND}"])
    assert refused.accepted() and refused.data is not None
    assert refused.data[0] == 554 and "refused at end of data" in refused.data[1], refused
    assert held.data is not None and held.data[0] == 250 and held.queue_id, held
    # HOLD is logged before the queue file exists; the message then waits in the hold queue.
    inst.wait_log("NOQUEUE: hold: RCPT from a.example.org[198.51.100.20]: <h@dest.test>")
    assert held.queue_id in inst.held()


def test_sasl_login_relays_and_the_sasl_access_table_refuses(inst: PostfixInstance) -> None:
    outside = "friend@outside.example"
    with smtp_session(inst, Client(addr="203.0.113.5", login=("alice", USERS["alice"]))) as s:
        sent = send_mail(s, "alice@example.org", [outside])
    assert sent.accepted() == [outside] and sent.queue_id, sent
    log = inst.wait_log(f"{sent.queue_id}: removed")
    assert (f"{sent.queue_id}: client=unknown[203.0.113.5], sasl_method=PLAIN, "
            "sasl_username=alice") in log
    # Unauthenticated relaying is refused before any policy is asked.
    with smtp_session(inst, Client(addr="203.0.113.6", name="p1.example.net")) as s:
        denied = send_mail(s, "x@example.net", [outside])
    assert denied.rcpt[outside][0] == 554 and "Relay access denied" in denied.rcpt[outside][1]
    # A listed SASL ID is refused by Postfix itself through check_sasl_access.
    with smtp_session(inst, Client(addr="203.0.113.7",
                                   login=("mallory", USERS["mallory"]))) as s:
        blocked = send_mail(s, "mallory@example.org", [outside, f"m@{INBOUND}"])
    for rcpt in (outside, f"m@{INBOUND}"):
        code, msg = blocked.rcpt[rcpt]
        assert code == 554, blocked
        assert msg == "5.7.1 <mallory>: SASL login name rejected: account blocked by test"
    with pytest.raises(smtplib.SMTPAuthenticationError), \
            smtp_session(inst, Client(login=("alice", "wrong"))):
        pass


def test_log_file_is_what_a_follower_reads(inst: PostfixInstance) -> None:
    start = inst.log_size()
    with smtp_session(inst, Client(source="127.0.0.9")) as smtp:
        sent = send_mail(smtp, "src@example.org", [f"s@{INBOUND}"])
    text = inst.wait_log(f"{sent.queue_id}: removed", after=start)
    assert f"{sent.queue_id}: client=unknown[127.0.0.9]" in text
    assert Path(inst.maillog_path).stat().st_size > start
