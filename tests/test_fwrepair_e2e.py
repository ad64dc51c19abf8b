"""A real logwatchd in a namespace: firewall drift repaired within the check interval (issue 12
point 10), an earlier backend or chain removed at start (point 11), and a guesser next to the
host's own IPv6 address banned on a narrower prefix (point 17)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from netns import Netns, netns, wait_until
from test_firewall import CHAIN, kernel_nets

from logwatch.state.store import Store

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("postmap") is None,
                       reason="needs iproute2 and postfix"),
]

GUESSERS = {"203.0.113.9": "203.0.113.9/32", "2001:db8:5::9": "2001:db8:5::/64"}


def stamp() -> str:
    return time.strftime("%b %e %H:%M:%S")


def unknown_user(ip: str, user: str) -> str:
    return (f"{stamp()} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
            f"550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<spam@example.net> to=<{user}@example.org> proto=ESMTP "
            f"helo=<guess>")


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns("lwr") as n:
        yield n


def daemon(base: Path, ns: Netns, backend: str, **firewall) -> DaemonProc:
    return DaemonProc(base, {
        "firewall": {"backend": backend, "ports": [25], "check_interval": 0.5, **firewall},
        "bans": {"maxretry": 5, "findtime": 600, "bantime": 3600},
    }, netns=ns.name)


def stored_bans(base: Path) -> set[str]:
    store = Store(base / "state" / "state.db")
    try:
        return {b.net for b in store.load_bans()}
    finally:
        store.close()


REMOVE = {
    "iptables": [["iptables", "-D", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "25", "-j",
                  CHAIN], ["iptables", "-F", CHAIN], ["iptables", "-X", CHAIN],
                 ["ip6tables", "-F", CHAIN]],
    "ipset": [["iptables", "-D", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "25", "-m", "set",
               "--match-set", "logwatchd4", "src", "-j", "DROP"],
              ["ipset", "destroy", "logwatchd4"], ["ipset", "flush", "logwatchd6"]],
    "nftables": [["nft", "delete", "table", "inet", "logwatchd"]],
}


@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_deleted_chain_comes_back_and_firewall_equals_store_equals_log(tmp_path, ns, backend):
    """The figure: after a hand-deleted chain/set/table, firewall == store == what the log
    decided, within the check interval, with a log line."""
    d = daemon(tmp_path, ns, backend)
    want = sorted(GUESSERS.values())
    try:
        d.start()
        d.append(*[unknown_user(ip, f"u{i}") for ip in GUESSERS for i in range(5)])
        assert wait_until(lambda: sorted(kernel_nets(ns, backend)) == want, 20), d.stderr()
        mark = len(d.stderr())
        for argv in REMOVE[backend]:
            ns.run(argv)
        assert sorted(kernel_nets(ns, backend)) != want
        d.wait_log("action=firewall-repair", timeout=10, after=mark)
        assert wait_until(lambda: sorted(kernel_nets(ns, backend)) == want, 10), d.stderr()
        assert d.req(cmd="status")["actions"].get("firewall-repair") == 1
        time.sleep(1.5)                 # three more checks: once repaired, nothing to repair
        assert d.stderr()[mark:].count("action=firewall-repair") == 1
    finally:
        d.stop()
    assert sorted(kernel_nets(ns, backend)) == sorted(stored_bans(tmp_path)) == want


def test_restart_with_another_backend_or_chain_removes_the_old_rules(tmp_path, ns):
    """Issue 12 point 11: LWHOSTILE kept its four DROPs after a restart on another backend."""
    nets = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]
    want = sorted(f"{n}/32" for n in nets)

    def hostile() -> list[str]:
        out = ns.run(["iptables", "-S", "LWHOSTILE"], check=False).stdout
        return [ln for ln in out.splitlines() if ln.endswith("-j DROP")]

    d = daemon(tmp_path, ns, "iptables", chain="LWHOSTILE")
    try:
        d.start()
        for n in nets:
            assert d.req(cmd="ban", ip=n)["ok"]
        assert len(hostile()) == 4
        d.stop()
        assert len(hostile()) == 4                      # no flush_on_stop: they stay
        d.settings["firewall"]["chain"] = CHAIN         # another chain name
        d.write_config()
        mark = len(d.stderr())
        d.start()
        assert hostile() == [] and ns.run(["iptables", "-S", "LWHOSTILE"], check=False).returncode
        assert "action=firewall-retire old=iptables:LWHOSTILE" in d.stderr()[mark:]
        assert sorted(kernel_nets(ns, "iptables")) == want
        d.stop()
        d.settings["firewall"]["backend"] = "nftables"  # another backend
        d.write_config()
        d.start()
        assert kernel_nets(ns, "iptables") == []
        assert ns.run(["iptables", "-S", CHAIN], check=False).returncode != 0
        assert sorted(kernel_nets(ns, "nftables")) == want
        d.stop()
        d.settings["bans"]["enabled"] = False           # bans off: our table goes too
        d.write_config()
        d.start()
        assert ns.run(["nft", "list", "table", "inet", "logwatchd"], check=False).returncode
    finally:
        d.stop()


def test_guesser_in_the_hosts_own_ipv6_64_is_banned_narrower(tmp_path, ns):
    """Issue 12 point 17 for real: the namespace's own 2001:db8:77::1 is in the guesser's /64."""
    ns.run(["ip", "-6", "addr", "add", "2001:db8:77::1/64", "dev", "lo"])
    guesser = "2001:db8:77:0:8000::9"
    d = daemon(tmp_path, ns, "iptables")
    try:
        d.start()
        d.append(*[unknown_user(guesser, f"u{i}") for i in range(5)])
        text = d.wait_log("action=ban-prefix-fallback", timeout=20)
        assert "ip=2001:db8:77:0:8000::/65 configured_prefix=/64" in text
        assert wait_until(lambda: kernel_nets(ns, "iptables") == ["2001:db8:77:0:8000::/65"], 10)
        assert d.req(cmd="status")["bans"] == 1
    finally:
        d.stop()
