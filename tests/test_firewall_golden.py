"""Golden tests: the exact iptables-restore / ipset restore / nft -f scripts each backend writes
for setup, ban, unban and reconcile of a fixed set of bans. No root needed: a recording runner
answers for the tools. Regenerate after an intended change with LOGWATCH_GOLDEN_UPDATE=1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from logwatch.daemon.config import FirewallConfig
from logwatch.effectors.firewall import make_firewall
from logwatch.effectors.runner import CommandFailed
from logwatch.engine.model import Ban

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_700_000_000.0      # the injected clock: every timeout below is counted from here

BANS = [
    Ban("192.0.2.7/32", NOW - 60, NOW + 3600),
    Ban("198.51.100.0/24", NOW - 60, NOW + 86400),
    Ban("2001:db8:1:2::/64", NOW - 60, None),
    Ban("203.0.113.9/32", NOW - 7200, NOW - 1),        # expired: never written
]
# What the kernel holds before reconcile: one of ours that must go, one that stays.
IPT_SAVE = ("*filter\n:INPUT ACCEPT [0:0]\n:SPAM_UNAME_GUESSERS - [0:0]\n"
            "-A INPUT -p tcp -m tcp --dport 25 -j SPAM_UNAME_GUESSERS\n"
            "-A SPAM_UNAME_GUESSERS -s 192.0.2.7/32 -j DROP\n"
            "-A SPAM_UNAME_GUESSERS -s 192.0.2.200/32 -j DROP\nCOMMIT\n")
IPSET_HEADER = ("Name: {0}\nType: hash:net\nHeader: family inet hashsize 1024 maxelem 1048576 "
                "timeout 0\n")


class Kernel:
    """A recording runner: logs every command and its input, answers like an empty kernel (or,
    with `held`, one holding a stale ban), and fails like the real tool for a missing nft table."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.held = False

    def __call__(self, argv: list[str], stdin: str | None = None,
                 timeout: float = 0) -> subprocess.CompletedProcess[str]:
        self.log.append("$ " + " ".join(argv) + "\n" + (stdin or ""))
        return subprocess.CompletedProcess(argv, 0, self.answer(argv), "")

    def answer(self, argv: list[str]) -> str:
        tool, rest = argv[0], argv[1:]
        if tool == "iptables-save":
            return IPT_SAVE if self.held else ""
        if tool == "ip6tables-save":
            return "".join(li for li in IPT_SAVE.splitlines(True) if "192.0.2." not in li) \
                if self.held else ""
        if tool == "ipset" and rest == ["list", "-n"]:
            return "logwatchd4\nlogwatchd6\n" if self.held else ""
        if tool == "ipset" and rest[:2] == ["list", "-t"]:
            return IPSET_HEADER.format(rest[2])
        if tool == "ipset" and rest == ["save", "logwatchd4"]:
            return "add logwatchd4 192.0.2.200 timeout 50\n"
        if tool == "nft" and rest[:2] == ["-j", "list"]:
            if not self.held:
                raise CommandFailed(argv, 1, "Error: No such file or directory\n", "")
            elem = [{"elem": {"val": "192.0.2.200", "expires": 50}}]
            return json.dumps({"nftables": [{"set": {"name": "host4", "elem": elem}}]})
        return ""


def script(backend: str) -> str:
    """Every command the backend runs for setup, ban, unban and reconcile, with its input."""
    kernel = Kernel()
    fw = make_firewall(FirewallConfig(backend=backend, ports=[25, 587]), clock=lambda: NOW,
                       run=kernel)
    out = []
    for step, call in [("setup", fw.setup), ("ban", lambda: fw.ban(BANS)),
                       ("unban", lambda: fw.unban(["192.0.2.7", "2001:db8:1:2::/64"])),
                       ("reconcile", lambda: fw.reconcile(BANS, NOW))]:
        kernel.log.clear()
        kernel.held = step in ("unban", "reconcile")
        call()
        out.append(f"### {step}\n" + "".join(kernel.log))
    return "\n".join(out)


@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_scripts_match_the_golden_files(backend: str) -> None:
    got = script(backend)
    path = GOLDEN / f"{backend}.txt"
    if os.environ.get("LOGWATCH_GOLDEN_UPDATE"):
        path.write_text(got)
    assert got == path.read_text(), f"{backend}: the generated scripts differ from {path}"


def test_timeouts_come_from_the_injected_clock() -> None:
    """With the clock at NOW a one-hour ban is written with 3600 s, whatever the wall clock."""
    kernel = Kernel()
    fw = make_firewall(FirewallConfig(backend="ipset"), clock=lambda: NOW, run=kernel)
    fw.ban(BANS[:1])
    assert "add logwatchd4 192.0.2.7/32 timeout 3600\n" in kernel.log[-1]
