"""Firewall drift (issue 12 point 10): objects removed, flushed or edited by hand are found by
drift() and put back by setup() + reconcile(); real tools in throwaway namespaces."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from netns import Netns, needs_netns, netns
from test_firewall import CHAIN, ban, fw_for, kernel_nets

from logwatch.effectors.firewall import EXPIRY_SLACK, drift
from logwatch.engine.model import Ban

BANS = ["192.0.2.7", "192.0.2.8", "198.51.100.0/24", "2001:db8::/64", "2001:db8:1::5"]
WANT = ["192.0.2.7/32", "192.0.2.8/32", "198.51.100.0/24", "2001:db8:1::5/128", "2001:db8::/64"]
JUMP = ["-p", "tcp", "-m", "tcp", "--dport", "25"]


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as n:
        yield n


def _nft_rule_handle(ns: Netns) -> str:
    out = ns.out(["nft", "-a", "list", "chain", "inet", "logwatchd", "input"])
    return re.findall(r"drop # handle (\d+)", out)[0]


def tamper(ns: Netns, backend: str, how: str) -> None:
    """What an admin (or a firewall service restart) does behind our back."""
    if backend == "iptables":
        steps = {
            "delete": [["iptables", "-D", "INPUT", *JUMP, "-j", CHAIN],
                       ["iptables", "-F", CHAIN], ["iptables", "-X", CHAIN]],
            "flush": [["iptables", "-F", CHAIN], ["ip6tables", "-F", CHAIN]],
            "one-rule": [["iptables", "-D", CHAIN, "-s", "192.0.2.7/32", "-j", "DROP"]],
            "jump": [["ip6tables", "-D", "INPUT", *JUMP, "-j", CHAIN]],
        }[how]
    elif backend == "ipset":
        match = ["-m", "set", "--match-set", "logwatchd4", "src", "-j", "DROP"]
        steps = {
            "delete": [["iptables", "-D", "INPUT", *JUMP, *match],
                       ["ipset", "destroy", "logwatchd4"]],
            "flush": [["ipset", "flush", "logwatchd6"]],
            "one-rule": [["iptables", "-D", "INPUT", *JUMP, *match]],
            "jump": [["ipset", "del", "logwatchd4", "192.0.2.8"]],
        }[how]
    else:
        steps = {
            "delete": [["nft", "delete", "table", "inet", "logwatchd"]],
            "flush": [["nft", "flush", "table", "inet", "logwatchd"]],
            "one-rule": [["nft", "delete", "rule", "inet", "logwatchd", "input", "handle",
                          _nft_rule_handle(ns)]],
            "jump": [["nft", "delete", "element", "inet", "logwatchd", "ban4",
                      "{ 198.51.100.0/24 }"]],
        }[how]
    for argv in steps:
        ns.run(argv)


@needs_netns
@pytest.mark.parametrize("how", ["delete", "flush", "one-rule", "jump"])
@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_drift_is_found_and_repaired(ns: Netns, backend: str, how: str) -> None:
    fw = fw_for(ns, backend)
    bans = [ban(n) for n in BANS]
    fw.setup()
    fw.ban(bans)
    assert drift(fw, bans, time.time()) == []
    tamper(ns, backend, how)
    found = drift(fw, bans, time.time())
    assert found, f"{backend}/{how}: drift not seen"
    fw.setup()
    fw.reconcile(bans, time.time())
    assert drift(fw, bans, time.time()) == []
    assert sorted(kernel_nets(ns, backend)) == WANT


@needs_netns
@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_bans_the_kernel_lacks_or_holds_extra_are_drift(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7")])
    now = time.time()
    assert drift(fw, [ban("192.0.2.7"), ban("192.0.2.9")], now) == (
        ["ipv4-missing=1"] if backend != "nftables" else ["elements-missing=1"])
    assert drift(fw, [], now) == (["ipv4-extra=1"] if backend != "nftables"
                                  else ["elements-extra=1"])


@needs_netns
@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_bans_about_to_expire_are_no_drift(ns: Netns, backend: str) -> None:
    """The kernel's timeout and the engine's sweep may differ by a moment: not worth a repair."""
    fw = fw_for(ns, backend)
    fw.setup()
    now = time.time()
    ending = Ban("192.0.2.7/32", now - 100, now + EXPIRY_SLACK - 0.5)
    assert drift(fw, [ending], now) == []             # not (yet / any more) in the kernel
    fw.ban([ban("192.0.2.8")])
    ended = Ban("192.0.2.8/32", now - 100, now - 0.5)  # in the kernel still, just ended for us
    assert drift(fw, [ended], now) == []
    long_ended = Ban("192.0.2.8/32", now - 100, now - 10)
    assert drift(fw, [long_ended], now) == (["ipv4-extra=1"] if backend != "nftables"
                                            else ["elements-extra=1"])


def test_dry_run_firewall_has_no_drift() -> None:
    from logwatch.daemon.config import FirewallConfig
    from logwatch.effectors.firewall import make_firewall

    fw = make_firewall(FirewallConfig(backend="iptables"), dry_run=True)
    assert drift(fw, [ban("192.0.2.7")], time.time()) == []


def test_a_slow_check_waits_twenty_times_its_duration(monkeypatch) -> None:
    """At 100,000 rules one read takes seconds: the check must not hog the event loop."""
    import argparse
    import types

    import logwatch.effectors.firewall.base
    from logwatch.daemon.app import FWCHECK_DUTY, Daemon
    from logwatch.daemon.config import Config

    def slow_drift(fw: object, bans: object, now: float) -> list[str]:
        time.sleep(0.05)
        return []

    monkeypatch.setattr(logwatch.effectors.firewall, "drift", slow_drift)
    cfg = Config()
    cfg.daemon.actions_log = None
    cfg.firewall.check_interval = 0.1
    d = Daemon(cfg, None, argparse.Namespace())
    d.firewall = object()
    d.engine = types.SimpleNamespace(bans={}, next_deadline=lambda: None)
    d.timers["fwcheck"] = 0.0
    before = time.time()
    d._run_timers(time.time())
    assert d.timers["fwcheck"] >= before + 0.05 * FWCHECK_DUTY


def test_a_hung_tool_is_an_error_not_a_hang(monkeypatch, tmp_path) -> None:
    """The periodic check runs the tools: one that never answers must end in FirewallError."""
    import logwatch.effectors.firewall.base
    from logwatch.daemon.config import FirewallConfig
    from logwatch.effectors.firewall import FirewallError, IptablesFirewall

    hang = tmp_path / "iptables-save"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(logwatch.effectors.firewall.base, "TOOL_TIMEOUT", 0.5)
    fw = IptablesFirewall(FirewallConfig(backend="iptables"))
    started = time.monotonic()
    with pytest.raises(FirewallError, match="no answer"):
        drift(fw, [ban("192.0.2.7")], time.time())
    assert time.monotonic() - started < 20
