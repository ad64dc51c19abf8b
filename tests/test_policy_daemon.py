"""The policy service in a real logwatchd process, spoken to over its real unix and inet
sockets: persistent connections, the block list re-read and written as a check_sasl_access
table (real postmap), policy-test and verdicts, quota counts across a restart, refunds from
the log, and S25R scores reaching the engine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from postfix_helpers import free_port

pytestmark = pytest.mark.needs("postmap")

DYNAMIC = {"client_name": "unknown", "reverse_client_name": "p1234-ipbf01.example.ne.jp"}
GOOD = {"client_name": "mail.example.org", "reverse_client_name": "mail.example.org"}


def wire(**attrs: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", "protocol_state": "RCPT", **attrs}
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


class PolicyClient:
    """One persistent connection, like one smtpd process."""

    def __init__(self, address: str) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(address[5:])
        else:
            host, _, port = address[5:].rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int) -> list[str]:
        while self.buf.count(b"\n\n") < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed after {self.buf!r}")
            self.buf += chunk
        parts = self.buf.split(b"\n\n")
        self.buf = b"\n\n".join(parts[n:])
        return [p.decode() for p in parts[:n]]

    def ask(self, **attrs: str) -> str:
        self.send(wire(**attrs))
        return self.replies(1)[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProc]:
    procs: list[DaemonProc] = []

    def make(policy: dict, quotas: list | None = None, args: tuple[str, ...] = ()) -> DaemonProc:
        d = DaemonProc(tmp_path, {"policy": policy}, extra_args=args)
        if quotas is not None:
            d.settings["quotas"] = quotas
            d.write_config()
        procs.append(d)
        return d
    yield make
    for d in procs:
        d.stop()


def ctl_stdin(d: DaemonProc, text: str, *args: str) -> subprocess.CompletedProcess:
    """logwatchctl policy-test with the request on its standard input."""
    return subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "--socket", d.socket,
                           "policy-test", *args], input=text, capture_output=True, text=True,
                          env=d.env(), timeout=60)



def test_fifty_persistent_connections_over_unix_and_inet(daemon, tmp_path: Path) -> None:
    path = tmp_path / "policy.sock"
    d = daemon({"s25r": "defer"}, args=("--policy-listen", f"unix:{path}"))
    d.start()
    assert path.stat().st_mode & 0o777 == 0o666          # smtpd runs as user postfix
    clients = [PolicyClient(f"unix:{path}") for _ in range(50)]
    for rnd in range(10):
        for i, c in enumerate(clients):                 # two pipelined requests each
            c.send(wire(client_address=f"203.0.113.{i + 1}", instance=f"{i}.{rnd}", **DYNAMIC)
                   + wire(client_address=f"198.51.100.{i + 1}", **GOOD))
        for c in clients:
            first, second = c.replies(2)
            assert first.startswith("action=DEFER_IF_PERMIT 4.7.1") and second == "action=DUNNO"
    clients[0].send(b"nonsense\n\n")
    assert clients[0].replies(1) == ["action=DUNNO"]
    st = d.req(cmd="status")["policy"]
    assert (st["requests"], st["malformed"], st["clients"]) == (1001, 1, 50)
    assert st["verdicts"] == {"s25r-rule0": 500, "none": 500}
    assert "policy:        requests=1001, malformed=1" in d.ctl("status").stdout
    for c in clients:
        c.close()
    d.stop()
    assert not path.exists()
    port = free_port()
    d2 = daemon({"listen": f"inet:127.0.0.1:{port}", "s25r": "off"})
    d2.start()
    conns = [PolicyClient(f"inet:127.0.0.1:{port}") for _ in range(50)]
    assert d2.req(cmd="ban", ip="203.0.113.9")["ok"]
    for c in conns:
        assert c.ask(client_address="203.0.113.9") == "action=REJECT 5.7.1 Access denied"
        assert c.ask(client_address="198.51.100.10", **DYNAMIC) == "action=DUNNO"
    for c in conns:
        c.close()


def test_block_list_is_reread_and_written_for_check_sasl_access(daemon, tmp_path: Path) -> None:
    block = tmp_path / "sasl-block"
    block.write_text("# reject_ids.txt\nmallory@example.org\n")
    port = free_port()
    d = daemon({"listen": f"inet:127.0.0.1:{port}", "sasl_access_map": f"hash:{tmp_path}/sasl"},
               args=("--sasl-block-list", str(block)))
    d.start()

    def postmap_q(user: str) -> str:
        return subprocess.run(["postmap", "-c", str(d.pfdir), "-q", user, f"hash:{tmp_path}/sasl"],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    c = PolicyClient(f"inet:127.0.0.1:{port}")
    assert c.ask(client_address="192.0.2.1", sasl_username="Mallory@Example.org") == \
        "action=REJECT 5.7.1 Authentication ID blocked"
    assert c.ask(client_address="192.0.2.1", sasl_username="bob") == "action=DUNNO"
    assert postmap_q("mallory@example.org") == "REJECT 5.7.1 Authentication ID blocked"
    block.write_text("bob\n")
    deadline = time.monotonic() + 10
    while c.ask(client_address="192.0.2.1", sasl_username="bob") == "action=DUNNO":
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.1)
    assert c.ask(client_address="192.0.2.1", sasl_username="mallory@example.org") == \
        "action=DUNNO"
    while postmap_q("bob") != "REJECT 5.7.1 Authentication ID blocked":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert postmap_q("mallory@example.org") == ""
    c.close()


def test_policy_test_verdicts_and_a_crash_keeping_quota_counts(daemon, tmp_path: Path) -> None:
    port = free_port()
    quota = {"name": "user-rcpt", "key": "sasl_username", "count": "recipients", "limit": 3,
             "period": "1m", "action": "defer"}
    d = daemon({"listen": f"inet:127.0.0.1:{port}", "s25r": "defer"}, [quota])
    d.start()
    c = PolicyClient(f"inet:127.0.0.1:{port}")
    for i in range(2):
        assert c.ask(client_address="192.0.2.5", sasl_username="carol", instance="A",
                     recipient=f"r{i}@example.org") == "action=DUNNO"
    # policy-test counts nothing, however often it is asked
    request = "protocol_state=RCPT\nclient_address=192.0.2.5\nsasl_username=carol\n" \
              "instance=T\nrecipient=t@example.org\n"
    for _ in range(3):
        out = ctl_stdin(d, request, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"action": "DUNNO", "rule": "none"}
    out = ctl_stdin(d, "protocol_state=RCPT\nclient_address=192.0.2.77\n"
                       "reverse_client_name=p1234-ipbf01.example.ne.jp\n")
    assert out.stdout.splitlines() == [
        "action=DEFER_IF_PERMIT 4.7.1 Service unavailable; client host looks dynamic (S25R), "
        "try again later", "rule=s25r-rule0"], out.stderr
    c.close()
    time.sleep(1.2)          # counters reach the store every 0.5 s: a crash loses no more
    d.kill9()
    d.start()
    c = PolicyClient(f"inet:127.0.0.1:{port}")
    assert c.ask(client_address="192.0.2.5", sasl_username="carol", instance="B",
                 recipient="r2@example.org") == "action=DUNNO"          # the third
    assert c.ask(client_address="192.0.2.5", sasl_username="carol", instance="B",
                 recipient="r3@example.org").startswith("action=DEFER_IF_PERMIT 4.7.1")
    assert c.ask(client_address="203.0.113.6", **DYNAMIC).startswith("action=DEFER_IF_PERMIT")
    out = d.ctl("verdicts", "--json", "--since", "1h")
    rows = json.loads(out.stdout)
    assert [r["rule"] for r in rows] == ["quota:user-rcpt", "s25r-rule0"], out
    assert rows[0]["recipient"] == "r3@example.org" and rows[0]["sasl_username"] == "carol"
    assert [r["rule"] for r in json.loads(d.ctl("verdicts", "--json", "--user", "CAROL").stdout)
            ] == ["quota:user-rcpt"]
    assert [r["client_address"] for r in json.loads(
        d.ctl("verdicts", "--json", "--ip", "203.0.113.6").stdout)] == ["203.0.113.6"]
    text = d.ctl("verdicts").stdout
    assert "quota:user-rcpt" in text and "2 verdict(s)" in text
    actions = (tmp_path / "actions.log").read_text()
    assert "action:policy-verdict\tip:192.0.2.5\trule:quota:user-rcpt" in actions
    c.close()


def test_log_side_rejection_refunds_and_s25r_scores(daemon, tmp_path: Path) -> None:
    port = free_port()
    quota = {"name": "ip-rcpt", "key": "client_address", "count": "recipients", "limit": 1,
             "period": 3600}
    msgs = {"name": "ip-msg", "key": "client_address", "count": "messages", "limit": 1,
            "period": 3600}
    d = daemon({"listen": f"inet:127.0.0.1:{port}", "s25r": "score"}, [quota, msgs])
    d.start()
    c = PolicyClient(f"inet:127.0.0.1:{port}")
    assert c.ask(client_address="192.0.2.1", instance="A", recipient="nobody@example.org",
                 **GOOD) == "action=DUNNO"
    assert c.ask(client_address="192.0.2.1", instance="A", recipient="b@example.org",
                 **GOOD).startswith("action=DEFER_IF_PERMIT")
    d.append("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from "
             "mail.example.org[192.0.2.1]: 550 5.1.1 <nobody@example.org>: Recipient address "
             "rejected: User unknown in local recipient table; from=<x@example.com> "
             "to=<nobody@example.org> proto=ESMTP helo=<mail.example.org>")
    deadline = time.monotonic() + 10
    while not c.ask(client_address="192.0.2.1", instance="A", recipient="b@example.org",
                    **GOOD) == "action=DUNNO":
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.1)
    # a milter rejects the whole message (by its queue id): its message count is refunded
    eom = {"client_address": "198.51.100.3", "instance": "M1", "queue_id": "4Bx7Yq3kR4z9y"}
    assert c.ask(protocol_state="END-OF-MESSAGE", **eom, **GOOD) == "action=DUNNO"
    assert c.ask(protocol_state="END-OF-MESSAGE", client_address="198.51.100.3",
                 instance="M2", **GOOD).startswith("action=DEFER_IF_PERMIT")
    d.append("Nov 21 10:04:03 mx1 postfix/cleanup[2144]: 4Bx7Yq3kR4z9y: milter-reject: "
             "END-OF-MESSAGE from mail.example.org[198.51.100.3]: 5.7.1 Spam; from=<a@b> "
             "to=<c@d> proto=ESMTP helo=<x>")
    while c.ask(protocol_state="END-OF-MESSAGE", client_address="198.51.100.3",
                instance="M3", **GOOD) != "action=DUNNO":
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.1)
    # score mode: DUNNO, and the engine counts an s25r offence for the client
    assert c.ask(client_address="203.0.113.50", instance="S", **DYNAMIC) == "action=DUNNO"
    while not (d.req(cmd="check", ip="203.0.113.50").get("offender") or {}).get("reasons"):
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.1)
    assert d.req(cmd="check", ip="203.0.113.50")["offender"]["reasons"] == {"s25r": 1}
    c.close()
