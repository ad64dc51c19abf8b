"""Issue 14's policy service under a real Postfix: real SMTP sessions decide every verdict.

A private Postfix (tests/postfix_helpers.py) asks a real logwatchd through
check_policy_service { inet:..., timeout=5s, default_action=DUNNO } and consults the
check_sasl_access table the daemon writes; SMTP AUTH goes through a private Dovecot; XCLIENT
presents each client's address and reverse name. The daemon follows the Postfix log.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from dovecot_helpers import dovecot_sasl
from postfix_helpers import (
    Client,
    MailOptions,
    PolicyHook,
    PostfixInstance,
    Sent,
    free_port,
    postfix_instance,
    send_mail,
    smtp_session,
)

pytestmark = pytest.mark.needs("root", "postfix", "postmap", "dovecot")

USERS = {"alice": "alice-pw", "mallory": "mallory-pw", "quser": "quser-pw",
         "ruser": "ruser-pw", "iuser": "iuser-pw"}
INBOUND = "dest.test"
BLOCKED = "mallory"


@dataclass
class Rig:
    inst: PostfixInstance
    daemon: DaemonProc
    table: str                  # hash:PATH, the daemon's policy.sasl_access_map
    rcpt_restrictions: str      # the instance's smtpd_recipient_restrictions, as started


def _daemon(base: Path, inst: PostfixInstance, port: int, table: str) -> DaemonProc:
    block = base / "sasl-block"
    block.write_text(f"# issue 14 scenario\n{BLOCKED}\n")
    d = DaemonProc(base, {
        "sources": {"logfiles": [inst.maillog_path]},
        "policy": {"listen": f"inet:127.0.0.1:{port}", "s25r": "defer",
                   "sasl_block_list": str(block), "sasl_access_map": table},
    })
    d.settings["quotas"] = [{"name": "user-rcpt", "key": "sasl_username",
                             "count": "recipients", "limit": 3, "period": 60,
                             "action": "defer"}]
    d.write_config()
    return d


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("policypf")
    os.chmod(base, 0o755)
    table = f"hash:{base}/sasl-access"
    port = free_port()
    with dovecot_sasl(USERS) as sasl:
        # A recipient check before the policy service, as in most real configurations.
        opts = MailOptions(policy=PolicyHook(f"inet:127.0.0.1:{port}"), sasl=sasl,
                           sasl_access=table, relay_domains=INBOUND,
                           recipient_checks=("reject_non_fqdn_recipient",))
        with postfix_instance(options=opts) as inst:
            d = _daemon(base, inst, port, table)
            try:
                d.start()
                _wait_table(base / "sasl-access.db")
                yield Rig(inst, d, table, inst.settings["smtpd_recipient_restrictions"])
            finally:
                d.stop()


def _wait_table(db: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not db.exists():
        assert time.monotonic() < deadline, f"the daemon wrote no {db}"
        time.sleep(0.05)


def _send(rig: Rig, who: Client, rcpts: list[str], sender: str = "s@example.org") -> Sent:
    with smtp_session(rig.inst, who) as smtp:
        return send_mail(smtp, sender, rcpts)


def _codes(sent: Sent) -> list[int]:
    return [code for code, _ in sent.rcpt.values()]


def test_banned_client_is_refused_at_rcpt(rig: Rig) -> None:
    banned, other = "198.51.100.66", "198.51.100.67"
    done = rig.daemon.ctl("ban", banned)
    assert done.returncode == 0, done.stderr
    sent = _send(rig, Client(addr=banned, name="mail.example.org"), [f"b@{INBOUND}"])
    code, msg = sent.rcpt[f"b@{INBOUND}"]
    assert code == 554 and msg.startswith("5.7.1 ") and "Access denied" in msg, sent
    assert _codes(_send(rig, Client(addr=other, name="mail.example.org"),
                        [f"b@{INBOUND}"])) == [250]
    verdicts = json.loads(rig.daemon.ctl("verdicts", "--json", "--ip", banned).stdout)
    assert verdicts and all(v["client_address"] == banned for v in verdicts), verdicts


def test_listed_sasl_user_refused_by_policy_and_by_table_without_daemon(rig: Rig) -> None:
    mallory = Client(addr="203.0.113.30", name="home.example.org",
                     login=(BLOCKED, USERS[BLOCKED]))
    alice = Client(addr="203.0.113.31", name="home.example.org", login=("alice", "alice-pw"))
    out = "friend@outside.example"
    # 1. Through the policy service alone: this Postfix has no check_sasl_access for now.
    policy_only = rig.rcpt_restrictions.replace(f"check_sasl_access {rig.table},", "").strip()
    assert "check_sasl_access" not in policy_only
    rig.inst.reconfigure({"smtpd_recipient_restrictions": policy_only})
    try:
        sent = _send(rig, mallory, [out])
        code, msg = sent.rcpt[out]
        assert code == 554 and "Recipient address rejected" in msg, sent
        assert _codes(_send(rig, alice, [out])) == [250]
        verdicts = json.loads(rig.daemon.ctl("verdicts", "--json", "--user", BLOCKED).stdout)
        assert verdicts, "the policy service stored no verdict for the blocked user"
    finally:
        rig.inst.reconfigure({"smtpd_recipient_restrictions": rig.rcpt_restrictions})
    # 2. Through the check_sasl_access table with the daemon stopped.
    rig.daemon.stop()
    try:
        sent = _send(rig, mallory, [out])
        code, msg = sent.rcpt[out]
        assert code == 554 and "SASL login name rejected" in msg, sent
        # Everyone else passes: the policy service is down, default_action=DUNNO.
        assert _codes(_send(rig, alice, [out])) == [250]
    finally:
        rig.daemon.start()


def test_quota_of_three_recipients_defers_the_fourth(rig: Rig) -> None:
    quser = Client(addr="203.0.113.40", name="home.example.org", login=("quser", "quser-pw"))
    rcpts = [f"q{i}@{INBOUND}" for i in range(4)]
    sent = _send(rig, quser, rcpts)
    assert _codes(sent) == [250, 250, 250, 450], sent
    assert sent.rcpt[rcpts[3]][1].startswith("4.7.1 ")
    assert sent.queue_id, sent
    # The log side sees the 450 for the 4th: it counted nothing, so nothing is refunded
    # (the daemon follows the log by inotify: a second is plenty to read these lines).
    rig.inst.wait_log(f"{sent.queue_id}: removed")
    time.sleep(1.0)
    again = _send(rig, quser, [f"q9@{INBOUND}"])
    assert _codes(again) == [450], again


def test_recipients_refused_before_the_policy_refund_nothing(rig: Rig) -> None:
    """Bogus recipients between counted ones (refused by a check before the policy service)
    must not give the counted ones back: the refund names the refused recipient."""
    iuser = Client(addr="203.0.113.45", name="home.example.org", login=("iuser", "iuser-pw"))
    rcpts = [f"i1@{INBOUND}", "foo", f"i2@{INBOUND}", "bar", f"i3@{INBOUND}", "baz"]
    sent = _send(rig, iuser, rcpts)
    assert _codes(sent) == [250, 504, 250, 504, 250, 504], sent
    rig.inst.wait_log(f"{sent.queue_id}: removed")
    time.sleep(1.0)
    again = _send(rig, iuser, [f"i4@{INBOUND}"])
    assert _codes(again) == [450], again


def test_s25r_defers_dynamic_names_only(rig: Rig) -> None:
    rcpt = [f"s@{INBOUND}"]
    dynamic = _send(rig, Client(addr="203.0.113.50", name="p1234-ipbf01.example.ne.jp"), rcpt)
    code, msg = dynamic.rcpt[rcpt[0]]
    assert code == 450 and msg.startswith("4.7.1 "), dynamic
    assert _codes(_send(rig, Client(addr="203.0.113.51", name="mail.example.org"), rcpt)) == [250]
    authed = Client(addr="203.0.113.52", name="p1234-ipbf02.example.ne.jp",
                    login=("alice", "alice-pw"))
    assert _codes(_send(rig, authed, rcpt)) == [250]


def test_restart_keeps_quota_counts(rig: Rig) -> None:
    ruser = Client(addr="203.0.113.60", name="home.example.org", login=("ruser", "ruser-pw"))
    first = _send(rig, ruser, [f"r1@{INBOUND}", f"r2@{INBOUND}"])
    assert _codes(first) == [250, 250], first
    rig.daemon.stop()
    rig.daemon.start()
    second = _send(rig, ruser, [f"r3@{INBOUND}", f"r4@{INBOUND}"])
    assert _codes(second) == [250, 450], second


def test_unix_socket_as_postfix_uses_it(tmp_path: Path) -> None:
    """policy.listen unix:PATH: smtpd (user postfix) connects to the socket the daemon made."""
    sockdir = Path(tempfile.mkdtemp(prefix="lw-policysock-"))
    try:
        os.chmod(sockdir, 0o755)
        path = sockdir / "logwatchd"
        opts = MailOptions(policy=PolicyHook(f"unix:{path}"), relay_domains=INBOUND)
        with postfix_instance(options=opts) as inst:
            d = DaemonProc(tmp_path, {"sources": {"logfiles": [inst.maillog_path]},
                                      "policy": {"listen": f"unix:{path}", "s25r": "defer"}})
            try:
                d.start()
                rcpt = [f"u@{INBOUND}"]
                with smtp_session(inst, Client(addr="203.0.113.70",
                                               name="p1234-ipbf01.example.ne.jp")) as smtp:
                    dynamic = send_mail(smtp, "s@example.org", rcpt)
                assert _codes(dynamic) == [450], dynamic
                with smtp_session(inst, Client(addr="203.0.113.71",
                                               name="mail.example.org")) as smtp:
                    assert send_mail(smtp, "s@example.org", rcpt).accepted() == rcpt
                assert "warning: connect to" not in inst.maillog()
            finally:
                d.stop()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
