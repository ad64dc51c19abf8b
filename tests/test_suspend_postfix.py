"""The real thing (issue 15 point 6): a private Postfix with Dovecot SASL and check_sasl_access,
a real logwatchd following its log. A normal user sends 3 messages and stays unsuspended; a
compromised user sends 300 recipients from 5 addresses (XCLIENT ADDR, then AUTH) within a
minute -> suspended (the table answers HOLD), and Postfix itself then holds its next message;
the normal user's next message is not held."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProc, postfix_config_dir
from dovecot_helpers import dovecot_sasl
from postfix_helpers import (
    Client,
    MailOptions,
    PostfixInstance,
    postfix_instance,
    send_mail,
    smtp_session,
)

pytestmark = pytest.mark.needs("root", "postfix", "postmap", "dovecot")

USERS = {"alice": "alice-pw", "victim": "victim-pw"}
HOLD = "HOLD suspended by logwatchd (compromised?)"
BURST_FROM = ["198.51.100.7", "203.0.113.8", "192.0.2.9", "100.64.1.10", "100.64.2.11"]


def wait_for(pred, timeout: float, what: str, d: DaemonProc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached:\n{d.stderr()[-3000:]}")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[PostfixInstance, DaemonProc]]:
    os.chmod(tmp_path, 0o755)
    spec = f"hash:{tmp_path / 'sasl'}"
    # smtpd opens the table when it starts (the harness probes it at once): it must exist
    # before, as in production (README: logwatchd first, then check_sasl_access in main.cf).
    (tmp_path / "sasl").write_text("")
    subprocess.run(["postmap", spec], check=True, env={**os.environ, "MAIL_CONFIG": str(
        postfix_config_dir(tmp_path))})
    with dovecot_sasl(USERS) as sasl, \
            postfix_instance(options=MailOptions(sasl=sasl, sasl_access=spec)) as inst:
        d = DaemonProc(tmp_path, {"sources": {"logfiles": [inst.maillog_path],
                                              "from_start": True},
                                  "accounting": {"enabled": True, "stats_log": None,
                                                 "sasl_access_map": spec}})
        d.spec = spec
        try:
            d.start()
            yield inst, d
        finally:
            d.stop(signal.SIGKILL)


def postmap_q(d: DaemonProc, key: str) -> str:
    return subprocess.run(["postmap", "-q", key, d.spec], capture_output=True, text=True,
                          env=d.env(), timeout=30).stdout.strip()


def test_compromised_account_is_suspended_and_postfix_holds_its_mail(world) -> None:
    inst, d = world
    for i in range(3):
        with smtp_session(inst, Client(addr="192.0.2.50", login=("alice", USERS["alice"]))) as s:
            sent = send_mail(s, "alice@example.org", [f"friend{i}@example.net"])
        assert sent.queue_id, sent
        inst.wait_log(f"{sent.queue_id}: removed")

    started = time.monotonic()
    for n, addr in enumerate(BURST_FROM):
        with smtp_session(inst, Client(addr=addr, login=("victim", USERS["victim"]))) as s:
            for part in range(2):
                rcpts = [f"t{n}-{part}-{i}@target{i % 7}.example" for i in range(30)]
                send_mail(s, "victim@example.org", rcpts)
    assert time.monotonic() - started < 60
    wait_for(lambda: postmap_q(d, "victim") == HOLD, 30, "suspension of victim", d)

    accounts = json.loads(d.ctl("accounts", "--json").stdout)
    (sus,) = accounts["suspended"]
    assert sus["user"] == "victim" and sus["score"] >= 100 and "recipients" in sus["why"]
    alice = next(a for a in accounts["accounts"] if a["user"] == "alice")
    assert alice["messages"] == 3 and alice["score"] < 10
    assert "action=suspend user=victim" in d.stderr()

    # Postfix itself now holds the victim's mail (check_sasl_access -> HOLD) ...
    with smtp_session(inst, Client(addr="198.51.100.7", login=("victim", USERS["victim"]))) as s:
        held = send_mail(s, "victim@example.org", ["one-more@target0.example"])
    assert held.queue_id, held
    wait_for(lambda: held.queue_id in inst.held(), 20, "the victim's message on hold", d)
    # ... and not alice's.
    with smtp_session(inst, Client(addr="192.0.2.50", login=("alice", USERS["alice"]))) as s:
        fine = send_mail(s, "alice@example.org", ["friend9@example.net"])
    inst.wait_log(f"{fine.queue_id}: removed")
    assert fine.queue_id not in inst.held()
