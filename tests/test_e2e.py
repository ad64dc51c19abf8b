"""End to end: a real logwatchd in a network namespace, real log lines, real postmap and iptables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from tailmode import tail_mode  # noqa: F401  (a fixture)

from logwatch.state.store import Store

pytestmark = [
    pytest.mark.usefixtures("tail_mode"),      # every test on inotify and on polling
    pytest.mark.root,
    pytest.mark.needs("root", "ip", "postmap"),
]

CHAIN = "LWD_E2E"


@pytest.fixture
def netns():
    name = f"lwde2e{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def stamp() -> str:
    """An RFC 3164 timestamp for now, as syslog writes it."""
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def login(ip: str, user: str = "alice") -> str:
    return (f"{stamp()} mx dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4242, TLS, session=<a1b2c3d4>")


def unknown_user(ip: str, user: str) -> str:
    return (f"{stamp()} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
            f"550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<spam@example.net> to=<{user}@example.org> proto=ESMTP "
            f"helo=<guess>")


def drops(ns: str) -> list[str]:
    """Source nets of the DROP rules in our chain (IPv4 and IPv6), duplicates kept."""
    nets = []
    for tool in ("iptables", "ip6tables"):
        out = subprocess.run(["ip", "netns", "exec", ns, tool, "-w", "-S", CHAIN],
                             capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts[:2] == ["-A", CHAIN] and "DROP" in parts and "-s" in parts:
                nets.append(parts[parts.index("-s") + 1])
    return nets


def map_keys(d: DaemonProc) -> list[str]:
    out = subprocess.run(["postmap", "-s", d.map], capture_output=True, text=True, env=d.env(),
                         check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def postmap_q(d: DaemonProc, ip: str) -> str:
    out = subprocess.run(["postmap", "-q", ip, d.map], capture_output=True, text=True,
                         env=d.env())
    return out.stdout.strip()


def wait_for(what, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def make(tmp_path: Path, ns: str, **bans) -> DaemonProc:
    return DaemonProc(tmp_path, {
        "firewall": {"backend": "iptables", "chain": CHAIN, "ports": [25]},
        "bans": {"maxretry": 5, "findtime": 600, "bantime": 3600, **bans},
        "relay": {"grace": 1800},
    }, netns=ns)


def test_login_grants_and_guesser_is_banned(tmp_path, netns):
    d = make(tmp_path, netns)
    try:
        d.start()
        guesser, client = "203.0.113.9", "192.0.2.11"
        d.append(login(client), *[unknown_user(guesser, f"u{i}") for i in range(5)])
        assert wait_for(lambda: postmap_q(d, client) == "OK"), d.stderr()
        assert wait_for(lambda: drops(netns) == [f"{guesser}/32"]), (drops(netns), d.stderr())
        rules = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-w", "-S", "INPUT"],
                               capture_output=True, text=True).stdout
        assert f"-j {CHAIN}" in rules
        assert postmap_q(d, guesser) == ""

        st = json.loads(d.ctl("status", "--json").stdout)
        assert st["events"] == {"login": 1, "user-unknown": 5}
        assert st["lines_read"] == 6 and st["grants"] == 1 and st["bans"] == 1
        bans = d.ctl("bans")
        assert bans.returncode == 0 and f"{guesser}/32" in bans.stdout
        assert "user-unknown:5" in bans.stdout
        assert client in d.ctl("grants").stdout

        unban = d.ctl("unban", guesser)
        assert unban.returncode == 0, unban.stderr
        assert drops(netns) == []
        actions = (tmp_path / "actions.log").read_text()
        assert f"action:ban\tip:{guesser}/32\treason:user-unknown:5" in actions
    finally:
        d.stop()


def test_sighup_with_new_whitelist_lifts_ban(tmp_path, netns):
    d = make(tmp_path, netns)
    wl = tmp_path / "whitelist"
    wl.write_text("# nothing yet\n")
    try:
        d.start()
        d.append(*[unknown_user("198.51.100.77", f"x{i}") for i in range(5)])
        assert wait_for(lambda: drops(netns) == ["198.51.100.77/32"]), d.stderr()
        # A new whitelist file named in the config: only a reload (SIGHUP) can know of it,
        # the change watcher follows the old file.
        new_wl = tmp_path / "whitelist.new"
        new_wl.write_text("198.51.100.77\n")
        d.settings["bans"]["whitelist"] = str(new_wl)
        d.write_config()
        time.sleep(1)
        assert drops(netns) == ["198.51.100.77/32"]
        d.send(signal.SIGHUP)
        assert wait_for(lambda: drops(netns) == []), d.stderr()
        assert d.req(cmd="status")["bans"] == 0
        # Whitelisted now: more guesses do not ban it again.
        d.append(*[unknown_user("198.51.100.77", f"y{i}") for i in range(5)])
        time.sleep(1)
        assert drops(netns) == []
    finally:
        d.stop()


def test_restart_keeps_everything(tmp_path, netns):
    d = make(tmp_path, netns)
    try:
        d.start()
        d.append(login("192.0.2.21"), login("2001:db8::21", "bob"),
                 *[unknown_user("203.0.113.21", f"u{i}") for i in range(5)],
                 *[unknown_user("2001:db8:bad:1::5", f"u{i}") for i in range(5)])
        assert wait_for(lambda: sorted(drops(netns)) == ["2001:db8:bad:1::/64",
                                                          "203.0.113.21/32"]), d.stderr()
        assert wait_for(lambda: sorted(map_keys(d)) == ["192.0.2.21", "2001:db8::21"])
        before = (d.req(cmd="grants")["grants"], d.req(cmd="bans")["bans"])
        d.stop()
        d.start()
        after = (d.req(cmd="grants")["grants"], d.req(cmd="bans")["bans"])
        assert after == before
        assert sorted(drops(netns)) == ["2001:db8:bad:1::/64", "203.0.113.21/32"]
        assert sorted(map_keys(d)) == ["192.0.2.21", "2001:db8::21"]
        time.sleep(0.5)
        assert d.req(cmd="status")["lines_read"] == 0      # positions kept: nothing re-read
    finally:
        d.stop()


def test_kill9_during_a_storm_of_5000_bans(tmp_path, netns):
    d = make(tmp_path, netns, maxretry=1)
    n = 5000
    guessers = [f"10.{(i >> 8) & 255}.{i & 255}.{1 + (i >> 16)}" for i in range(n)]
    clients = [f"172.16.{i // 200}.{i % 200 + 1}" for i in range(50)]
    lines = []
    for i, ip in enumerate(guessers):
        lines.append(unknown_user(ip, f"g{i}"))
        if i % 100 == 0:
            lines.append(login(clients[i // 100]))
    try:
        d.start()
        # Write in pieces so the kill lands while bans are being applied.
        step = 250
        killed_at = None
        for start in range(0, len(lines), step):
            d.append(*lines[start:start + step])
            if start >= len(lines) // 3 and killed_at is None:
                wait_for(lambda: d.req(cmd="status")["bans"] > 0, timeout=20)
                killed_at = d.req(cmd="status")["bans"]
                d.kill9()
        assert killed_at is not None and 0 < killed_at < n
        d.start()
        assert wait_for(lambda: d.req(cmd="status")["bans"] == n, timeout=240, step=0.5), \
            (d.req(cmd="status")["bans"], d.stderr()[-3000:])
        assert wait_for(lambda: d.req(cmd="status")["grants"] == len(clients), timeout=30)
        d.stop()
        fw = drops(netns)
        store = Store(tmp_path / "state" / "state.db")
        try:
            stored_bans = {b.net for b in store.load_bans()}
            stored_grants = {g.ip for g in store.load_grants()}
        finally:
            store.close()
        assert len(fw) == len(set(fw)), "duplicate DROP rules"
        assert set(fw) == stored_bans == {f"{ip}/32" for ip in guessers}
        keys = map_keys(d)
        assert len(keys) == len(set(keys))
        assert set(keys) == stored_grants == set(clients)
    finally:
        d.stop()


def test_reload_out_of_dry_run_really_bans_and_grants(tmp_path, netns):
    d = DaemonProc(tmp_path, {
        "firewall": {"backend": "iptables", "chain": CHAIN, "ports": [25]},
        "daemon": {"dry_run": True},
    }, netns=netns)
    try:
        d.start()
        assert d.req(cmd="ban", ip="198.51.100.60")["ok"]
        assert d.req(cmd="grant", ip="192.0.2.60")["ok"]
        assert drops(netns) == [] and postmap_q(d, "192.0.2.60") == ""
        d.settings["daemon"]["dry_run"] = False
        d.write_config()
        assert d.req(cmd="reload")["ok"]
        assert d.req(cmd="status")["dry_run"] is False
        assert drops(netns) == ["198.51.100.60/32"], d.stderr()
        assert postmap_q(d, "192.0.2.60") == "OK"
        assert d.req(cmd="ban", ip="198.51.100.61")["ok"]
        assert sorted(drops(netns)) == ["198.51.100.60/32", "198.51.100.61/32"]
    finally:
        d.stop()


def nft_elements(ns: str, table: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", table],
                          capture_output=True, text=True).stdout


def test_reload_to_another_backend_removes_the_old_rules(tmp_path, netns):
    d = make(tmp_path, netns)
    try:
        d.start()
        assert d.req(cmd="ban", ip="198.51.100.70")["ok"]
        assert drops(netns) == ["198.51.100.70/32"]
        d.settings["firewall"] = {"backend": "nftables", "nft_table": "lwde2e", "ports": [25]}
        d.write_config()
        assert d.req(cmd="reload")["ok"]
        for tool in ("iptables", "ip6tables"):
            listing = subprocess.run(["ip", "netns", "exec", netns, tool, "-w", "-S"],
                                     capture_output=True, text=True).stdout
            assert CHAIN not in listing, listing
        assert "198.51.100.70" in nft_elements(netns, "lwde2e"), d.stderr()
        # Bans disabled: the nftables table goes too.
        d.settings["bans"]["enabled"] = False
        d.write_config()
        assert d.req(cmd="reload")["ok"]
        assert nft_elements(netns, "lwde2e") == ""
    finally:
        d.stop()


def test_a_failed_firewall_write_is_repaired(tmp_path, netns):
    """iptables-restore fails for a while (a wrapper on PATH): the ban is in the store but not
    in the kernel, and the repair timer puts it there once the tool works again."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    flag = tmp_path / "fail-now"
    for tool in ("iptables-restore", "ip6tables-restore"):
        wrapper = fakebin / tool
        wrapper.write_text(f"#!/bin/sh\n[ -e {flag} ] && {{ echo injected failure >&2; exit 1; }}\n"
                           f"exec /usr/sbin/{tool} \"$@\"\n")
        wrapper.chmod(0o755)
    d = make(tmp_path, netns)
    base_env = d.env
    d.env = lambda: {**base_env(), "PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin')}"}
    try:
        d.start()
        flag.write_text("")
        d.append(*[unknown_user("203.0.113.66", f"r{i}") for i in range(5)])
        assert wait_for(lambda: "action=firewall-error" in d.stderr()), d.stderr()
        assert d.req(cmd="status")["bans"] == 1 and drops(netns) == []
        flag.unlink()
        assert wait_for(lambda: drops(netns) == ["203.0.113.66/32"], timeout=15), d.stderr()
        # The kernel holds the ban a moment before the repair logs its result.
        assert wait_for(lambda: "action=repair result=ok" in d.stderr()), d.stderr()
    finally:
        d.stop()


@pytest.mark.parametrize("flush", [False, True])
def test_flush_on_stop(tmp_path, netns, flush):
    """Bans stay in the kernel over a clean stop by default; flush_on_stop removes our chain."""
    d = make(tmp_path, netns)
    d.settings["firewall"]["flush_on_stop"] = flush
    d.write_config()
    try:
        d.start()
        d.append(*[unknown_user("203.0.113.77", f"f{i}") for i in range(5)])
        assert wait_for(lambda: drops(netns) == ["203.0.113.77/32"]), d.stderr()
    finally:
        d.stop()
    chain = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-w", "-S", CHAIN],
                           capture_output=True, text=True)
    if flush:
        assert chain.returncode != 0 and drops(netns) == []
    else:
        assert drops(netns) == ["203.0.113.77/32"]
