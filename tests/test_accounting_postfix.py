"""Issue 15's first scenario with the real thing: a user logs in to a private Postfix through
Dovecot SASL and sends 3 messages; logwatchd, following Postfix's log, writes 3 stats-log lines
whose fields are what the client sent (tests/postfix_helpers.py, tests/dovecot_helpers.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from dovecot_helpers import dovecot_sasl
from postfix_helpers import (
    Client,
    MailOptions,
    PostfixInstance,
    postfix_instance,
    send_mail,
    smtp_session,
)

from logwatch.daemon.statslog import parse_line

pytestmark = pytest.mark.needs("root", "postfix", "postmap", "dovecot")

USERS = {"alice": "alice-pw"}
INBOUND = "dest.test"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def inst() -> Iterator[PostfixInstance]:
    with dovecot_sasl(USERS) as sasl, postfix_instance(
            options=MailOptions(sasl=sasl, relay_domains=INBOUND)) as running:
        yield running


def stats(path: Path) -> list[list[tuple[str, str]]]:
    return [parse_line(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_three_messages_give_three_stats_lines_with_the_clients_fields(
        inst: PostfixInstance, tmp_path: Path) -> None:
    stats_log = tmp_path / "stats.log"
    d = DaemonProc(tmp_path, {"sources": {"logfiles": [inst.maillog_path], "from_start": True},
                              "accounting": {"enabled": True, "stats_log": str(stats_log)}})
    d.start()
    try:
        sent = []
        who = Client(addr="203.0.113.5", login=("alice", USERS["alice"]))
        with smtp_session(inst, who) as smtp:
            for n, rcpts in enumerate([["a@outside.example"],
                                       ["b@outside.example", f"c@{INBOUND}"],
                                       [f"d@{INBOUND}", "e@outside.example", f"f@{INBOUND}"]]):
                s = send_mail(smtp, f"alice+{n}@example.org", rcpts, body="x" * (100 * (n + 1)))
                assert s.accepted() == rcpts and s.queue_id, s
                sent.append((s.queue_id, f"alice+{n}@example.org", rcpts))
        for qid, _, _ in sent:
            inst.wait_log(f"{qid}: removed")
        deadline = time.monotonic() + 30
        while len(stats(stats_log)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = stats(stats_log)
        assert len(lines) == 3, d.stderr()[-3000:]
        by_qid = {dict(pairs)["queue_id"]: pairs for pairs in lines}
        assert set(by_qid) == {qid for qid, _, _ in sent}
        sizes = []
        for qid, sender, rcpts in sent:
            pairs = by_qid[qid]
            f = dict(pairs)
            assert (f["client"], f["auth_id"], f["sasl_method"], f["sender"]) == (
                "203.0.113.5", "alice", "PLAIN", sender)
            # In the order Postfix delivered them.
            assert sorted(v for k, v in pairs if k == "recipient") == sorted(rcpts)
            assert sorted(v for k, v in pairs if k == "recipient_status") == sorted(
                f"{r}=sent" for r in rcpts)
            assert STAMP.match(f["connect_time"]) and STAMP.match(f["eom_time"])
            assert f["connect_time"] <= f["eom_time"] <= f["done_time"]
            assert f["nrcpt"] == str(len(rcpts)) and f["outcome"] == "delivered"
            assert f["message_id"].endswith("@logwatchd-test.invalid>")
            sizes.append(int(f["size"]))
        assert sizes == sorted(sizes) and sizes[0] > 100     # the bodies grew by 100 bytes
        # The same records through the control socket.
        st = d.req(cmd="messages", user="alice")
        assert {m["queue_id"] for m in st["messages"]} == set(by_qid)
    finally:
        d.stop()
