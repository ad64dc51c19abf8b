"""Firewall backends against the real iptables/ip6tables/ipset/nft inside throwaway namespaces."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from netns import Netns, needs_netns, netns, wait_until

from logwatch.daemon.config import FirewallConfig
from logwatch.effectors.firewall import (
    IPSET_MAX_TIMEOUT,
    FirewallError,
    IpsetFirewall,
    IptablesFirewall,
    NoneFirewall,
    _collapse,
    make_firewall,
    normalize_net,
    remaining,
)
from logwatch.engine.model import Ban

BACKENDS = ["iptables", "ipset", "nftables"]
CHAIN = "SPAM_UNAME_GUESSERS"


def ban(net: str, ttl: float | None = 3600.0) -> Ban:
    now = time.time()
    return Ban(net=net, since=now, expires_at=None if ttl is None else now + ttl)


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as n:
        yield n


# -- what the kernel holds, read with the tools an admin would use --------------------------

def chain_rules(ns: Netns, tool: str = "iptables") -> list[str]:
    proc = ns.run([tool, "-S", CHAIN], check=False)
    return [ln for ln in proc.stdout.splitlines() if ln.startswith("-A ")]


def input_rules(ns: Netns, tool: str = "iptables") -> list[str]:
    return [ln for ln in ns.out([tool, "-S", "INPUT"]).splitlines() if ln.startswith("-A ")]


def ipset_members(ns: Netns, name: str) -> list[str]:
    proc = ns.run(["ipset", "list", name], check=False)
    if proc.returncode:
        return []
    return proc.stdout.split("Members:\n", 1)[1].splitlines()


def nft_ruleset(ns: Netns) -> list[dict]:
    return json.loads(ns.out(["nft", "-j", "list", "ruleset"]))["nftables"]


def nft_elements(ns: Netns, setname: str) -> list[object]:
    for obj in nft_ruleset(ns):
        s = obj.get("set")
        if s and s["table"] == "logwatchd" and s["name"] == setname:
            return s.get("elem", [])
    return []


def kernel_nets(ns: Netns, backend: str) -> list[str]:
    """Nets held by our objects, read independently of the code under test, with repeats."""
    if backend == "iptables":
        return [r.split()[3] for r in chain_rules(ns) + chain_rules(ns, "ip6tables")
                if r.endswith("-j DROP")]
    if backend == "ipset":
        out = []
        for name in ("logwatchd4", "logwatchd6"):
            out += [str(normalize_net(m.split()[0])) for m in ipset_members(ns, name)]
        return out
    out = []
    for setname in ("host4", "host6", "ban4", "ban6"):
        for e in nft_elements(ns, setname):
            val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(val, dict):
                val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
            out.append(str(normalize_net(val)))
    return out


def fw_for(ns: Netns, backend: str, **kw) -> object:
    return make_firewall(FirewallConfig(backend=backend, **kw), netns=ns.name)


# -- pure helpers --------------------------------------------------------------------------

def test_normalize_net() -> None:
    assert str(normalize_net("192.0.2.7")) == "192.0.2.7/32"
    assert str(normalize_net("2001:db8:1:2:3::9/64")) == "2001:db8:1:2::/64"
    assert str(normalize_net("::ffff:192.0.2.7")) == "192.0.2.7/32"
    for bad in ("0.0.0.0/0", "::/0", "nonsense", "1.2.3.4; rm -rf /", "fe80::1%eth0", "-j ACCEPT"):
        with pytest.raises(ValueError):
            normalize_net(bad)


def test_remaining_rounds_up_and_permanent() -> None:
    assert remaining(Ban("1.2.3.4/32", 0, None), 100.0) is None
    assert remaining(Ban("1.2.3.4/32", 0, 100.2), 100.0) == 1
    assert remaining(Ban("1.2.3.4/32", 0, 99.0), 100.0) == -1
    assert IpsetFirewall._timeout(None) == 0
    # Beyond the kernel's limit: permanent in the kernel; the daemon unbans at expiry.
    assert IpsetFirewall._timeout(10**9) == 0
    assert IpsetFirewall._timeout(IPSET_MAX_TIMEOUT) == IPSET_MAX_TIMEOUT


def test_collapse_keeps_broadest_prefix_and_all_hosts() -> None:
    items = {t: (normalize_net(t), None) for t in
             ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "2001:db8::/32", "2001:db8:1::/64",
              "2001:db8:1::1/128")}
    assert set(_collapse(items)) == {"10.0.0.0/8", "10.1.2.3/32", "2001:db8::/32",
                                     "2001:db8:1::1/128"}


@pytest.mark.parametrize("kw", [
    {"backend": "pf"}, {"chain": "bad chain"}, {"chain": "INPUT"}, {"ports": []},
    {"ports": [70000]}, {"ports": list(range(1, 20))}, {"nft_table": "x;y"},
    {"ipset_v4": "same", "ipset_v6": "same"}, {"ipset_maxelem": 0},
])
def test_bad_config_is_refused(kw: dict) -> None:
    with pytest.raises(FirewallError):
        make_firewall(FirewallConfig(**kw))


def test_dry_run_executes_nothing(ns: Netns, caplog: pytest.LogCaptureFixture) -> None:
    for backend in BACKENDS + ["none"]:
        fw = make_firewall(FirewallConfig(backend=backend), dry_run=True, netns=ns.name)
        assert isinstance(fw, NoneFirewall)
        with caplog.at_level(logging.INFO, logger="logwatchd.firewall"):
            fw.setup()
            fw.ban([ban("192.0.2.7"), ban("2001:db8::/64", None)])
            assert fw.listing() == {"192.0.2.7/32", "2001:db8::/64"}
            fw.unban(["192.0.2.7"])
            assert fw.listing() == {"2001:db8::/64"}
            fw.reconcile([ban("198.51.100.1"), ban("198.51.100.2", -5)], time.time())
            assert fw.listing() == {"198.51.100.1/32"}
            fw.flush()
        assert f"backend={backend} dry_run=1 net=192.0.2.7/32" in caplog.text
    # Nothing reached the kernel.
    assert chain_rules(ns) == [] and input_rules(ns) == []
    assert ns.out(["ipset", "list", "-n"]).strip() == ""
    assert "logwatchd" not in ns.out(["nft", "list", "tables"])


# -- every backend, real kernel ------------------------------------------------------------

@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_ban_unban_ipv4_ipv6(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("2001:db8:1:2::9/64", None), ban("198.51.100.0/24")])
    assert sorted(kernel_nets(ns, backend)) == sorted(
        ["192.0.2.7/32", "2001:db8:1:2::/64", "198.51.100.0/24"])
    assert fw.listing() == {"192.0.2.7/32", "2001:db8:1:2::/64", "198.51.100.0/24"}
    fw.unban(["192.0.2.7/32", "2001:db8:1:2::/64", "203.0.113.9"])   # last one never banned
    assert kernel_nets(ns, backend) == ["198.51.100.0/24"]
    assert fw.listing() == {"198.51.100.0/24"}


@needs_netns
def test_iptables_layout_is_blocksmtp_compatible(ns: Netns) -> None:
    fw = fw_for(ns, "iptables", ports=[25, 465, 587])
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("2001:db8::/64")])
    assert input_rules(ns) == [f"-A INPUT -p tcp -m multiport --dports 25,465,587 -j {CHAIN}"]
    assert input_rules(ns, "ip6tables") == [
        f"-A INPUT -p tcp -m multiport --dports 25,465,587 -j {CHAIN}"]
    assert chain_rules(ns) == [f"-A {CHAIN} -s 192.0.2.7/32 -j DROP"]
    assert chain_rules(ns, "ip6tables") == [f"-A {CHAIN} -s 2001:db8::/64 -j DROP"]
    listing = ns.out(["iptables", "-L", CHAIN, "-n"])
    assert "DROP" in listing and "192.0.2.7" in listing
    # Changing the ports replaces the jump instead of adding a second one.
    fw2 = fw_for(ns, "iptables", ports=[25])
    fw2.setup()
    assert input_rules(ns) == [f"-A INPUT -p tcp -m tcp --dport 25 -j {CHAIN}"]
    # The jump goes first, ahead of an ACCEPT for port 25 that was there before.
    ns.run(["iptables", "-D", "INPUT", "-p", "tcp", "--dport", "25", "-j", CHAIN])
    ns.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"])
    fw2.setup()
    assert input_rules(ns)[0].endswith(f"-j {CHAIN}")


@needs_netns
def test_ipset_sets_are_large_with_timeouts(ns: Netns) -> None:
    fw = fw_for(ns, "ipset")
    fw.setup()
    fw.ban([ban("192.0.2.7", 100), ban("192.0.2.8", None)])
    header = ns.out(["ipset", "list", "-t", "logwatchd4"])
    assert "maxelem 1048576" in header and "timeout 0" in header and "family inet " in header
    assert "family inet6" in ns.out(["ipset", "list", "-t", "logwatchd6"])
    members = dict(m.split(" timeout ") for m in ipset_members(ns, "logwatchd4"))
    assert members["192.0.2.8"] == "0" and 95 <= int(members["192.0.2.7"]) <= 100
    assert input_rules(ns) == [
        "-A INPUT -p tcp -m tcp --dport 25 -m set --match-set logwatchd4 src -j DROP"]
    assert input_rules(ns, "ip6tables") == [
        "-A INPUT -p tcp -m tcp --dport 25 -m set --match-set logwatchd6 src -j DROP"]


@needs_netns
def test_nftables_table_layout(ns: Netns) -> None:
    fw = fw_for(ns, "nftables", ports=[25, 587])
    fw.setup()
    fw.ban([ban("192.0.2.7", 100), ban("2001:db8::/64", None), ban("198.51.100.0/24", 50)])
    sets = {o["set"]["name"]: o["set"] for o in nft_ruleset(ns) if "set" in o}
    assert set(sets["ban4"]["flags"]) == {"interval", "timeout"}
    assert set(sets["ban6"]["flags"]) == {"interval", "timeout"}
    assert sets["host4"]["flags"] == ["timeout"]
    assert sets["ban4"]["type"] == "ipv4_addr" and sets["ban6"]["type"] == "ipv6_addr"
    elem = sets["host4"]["elem"][0]["elem"]
    assert elem["val"] == "192.0.2.7" and 95 <= elem["timeout"] <= 100
    elem = sets["ban4"]["elem"][0]["elem"]
    assert elem["val"] == {"prefix": {"addr": "198.51.100.0", "len": 24}}
    assert sets["ban6"]["elem"] == [{"prefix": {"addr": "2001:db8::", "len": 64}}]
    chains = [o["chain"] for o in nft_ruleset(ns) if "chain" in o]
    assert [(c["table"], c["hook"]) for c in chains] == [("logwatchd", "input")]
    text = ns.out(["nft", "list", "table", "inet", "logwatchd"])
    for rule in ("ip saddr @ban4", "ip6 saddr @ban6", "ip saddr @host4", "ip6 saddr @host6"):
        assert f"tcp dport {{ 25, 587 }} {rule} drop" in text


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_duplicates_and_restart(ns: Netns, backend: str) -> None:
    bans = [ban("192.0.2.7"), ban("2001:db8::/64")]
    fw = fw_for(ns, backend)
    fw.setup()
    fw.setup()
    fw.ban(bans)
    fw.ban(bans)
    assert sorted(kernel_nets(ns, backend)) == ["192.0.2.7/32", "2001:db8::/64"]
    # A restart: a new object knows nothing but must neither duplicate nor lose anything.
    fw2 = fw_for(ns, backend)
    fw2.ban(bans[:1])
    fw2.setup()
    assert sorted(kernel_nets(ns, backend)) == ["192.0.2.7/32", "2001:db8::/64"]
    fw2.reconcile(bans, time.time())
    fw2.reconcile(bans, time.time())
    assert sorted(kernel_nets(ns, backend)) == ["192.0.2.7/32", "2001:db8::/64"]
    if backend == "iptables":
        assert len(input_rules(ns)) == 1 and len(input_rules(ns, "ip6tables")) == 1
    elif backend == "ipset":
        assert len(input_rules(ns)) == 1 and len(input_rules(ns, "ip6tables")) == 1
    else:
        tables = [o["table"]["name"] for o in nft_ruleset(ns) if "table" in o]
        assert tables.count("logwatchd") == 1
        rules = [o for o in nft_ruleset(ns) if "rule" in o]
        assert len(rules) == 4


def tamper(ns: Netns, backend: str) -> None:
    """Delete 192.0.2.8 by hand, add a foreign entry/rule, duplicate 192.0.2.7."""
    if backend == "iptables":
        ns.run(["iptables", "-D", CHAIN, "-s", "192.0.2.8/32", "-j", "DROP"])
        ns.run(["iptables", "-A", CHAIN, "-s", "203.0.113.1", "-j", "ACCEPT"])
        ns.run(["iptables", "-A", CHAIN, "-s", "203.0.113.2", "-j", "DROP"])
        ns.run(["iptables", "-A", CHAIN, "-s", "192.0.2.7", "-j", "DROP"])
        ns.run(["ip6tables", "-A", CHAIN, "-s", "2001:db8:dead::/64", "-j", "DROP"])
        ns.run(["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "25", "-j", CHAIN])
    elif backend == "ipset":
        ns.run(["ipset", "del", "logwatchd4", "192.0.2.8"])
        ns.run(["ipset", "add", "logwatchd4", "203.0.113.2"])
        ns.run(["ipset", "add", "logwatchd6", "2001:db8:dead::/64"])
        ns.run(["iptables", "-D", "INPUT", "-p", "tcp", "--dport", "25", "-m", "set",
                "--match-set", "logwatchd4", "src", "-j", "DROP"])
        ns.run(["ip6tables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-m", "set",
                "--match-set", "logwatchd6", "src", "-j", "DROP"])
    else:
        ns.run(["nft", "delete", "element", "inet", "logwatchd", "host4", "{ 192.0.2.8 }"])
        ns.run(["nft", "add", "element", "inet", "logwatchd", "host4", "{ 203.0.113.2 }"])
        ns.run(["nft", "add", "element", "inet", "logwatchd", "ban6", "{ 2001:db8:dead::/64 }"])
        ns.run(["nft", "add", "rule", "inet", "logwatchd", "input", "ip", "saddr",
                "203.0.113.1", "accept"])
        ns.run(["nft", "add", "rule", "inet", "logwatchd", "input", "tcp", "dport", "25", "ip",
                "saddr", "@ban4", "drop"])


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_reconcile_after_tampering(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("192.0.2.8"), ban("192.0.2.9"), ban("2001:db8::/64")])
    tamper(ns, backend)
    now = time.time()
    live = [ban("192.0.2.7"), ban("192.0.2.8"), ban("2001:db8::/64"), ban("198.51.100.5", None)]
    expired = Ban("192.0.2.9/32", now - 100, now - 1)
    fw2 = fw_for(ns, backend)
    fw2.reconcile(live + [expired], now)
    want = ["192.0.2.7/32", "192.0.2.8/32", "198.51.100.5/32", "2001:db8::/64"]
    assert sorted(kernel_nets(ns, backend)) == want
    assert fw2.listing() == set(want)
    if backend == "iptables":
        assert sorted(chain_rules(ns)) == sorted(
            f"-A {CHAIN} -s {n} -j DROP" for n in want if "." in n)
        assert len(input_rules(ns)) == 1
    elif backend == "ipset":
        assert len(input_rules(ns)) == 1 and len(input_rules(ns, "ip6tables")) == 1
    else:
        rules = [o["rule"] for o in nft_ruleset(ns) if "rule" in o]
        assert len(rules) == 4 and all(r["table"] == "logwatchd" for r in rules)
        assert "accept" not in json.dumps(rules)


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_foreign_objects_survive(ns: Netns, backend: str) -> None:
    ns.run(["iptables", "-N", "FOREIGN"])
    ns.run(["iptables", "-A", "FOREIGN", "-s", "192.0.2.7", "-j", "ACCEPT"])
    ns.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "FOREIGN"])
    ns.run(["ip6tables", "-N", "FOREIGN6"])
    ns.run(["ipset", "create", "foreignset", "hash:ip"])
    ns.run(["ipset", "add", "foreignset", "192.0.2.7"])
    ns.run(["nft", "add", "table", "inet", "foreign"])
    ns.run(["nft", "add", "set", "inet", "foreign", "s", "{ type ipv4_addr; }"])
    ns.run(["nft", "add", "element", "inet", "foreign", "s", "{ 192.0.2.7 }"])
    before = (ns.out(["iptables", "-S", "FOREIGN"]), ns.out(["ip6tables", "-S", "FOREIGN6"]),
              ns.out(["ipset", "list", "foreignset"]),
              ns.out(["nft", "list", "table", "inet", "foreign"]))
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("2001:db8::/64")])
    fw.reconcile([ban("192.0.2.8")], time.time())
    fw.unban(["192.0.2.8"])
    fw.flush()
    after = (ns.out(["iptables", "-S", "FOREIGN"]), ns.out(["ip6tables", "-S", "FOREIGN6"]),
             ns.out(["ipset", "list", "foreignset"]),
             ns.out(["nft", "list", "table", "inet", "foreign"]))
    assert after == before
    assert "-A INPUT -p tcp -m tcp --dport 22 -j FOREIGN" in input_rules(ns)


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_flush_removes_everything_of_ours(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("2001:db8::/64")])
    fw.flush()
    fw.flush()    # idempotent
    assert fw.listing() == set()
    assert input_rules(ns) == [] and input_rules(ns, "ip6tables") == []
    assert ns.run(["iptables", "-S", CHAIN], check=False).returncode != 0
    assert ns.out(["ipset", "list", "-n"]).strip() == ""
    assert "logwatchd" not in ns.out(["nft", "list", "tables"])
    # And it comes back on the next ban.
    fw.ban([ban("192.0.2.7")])
    assert fw.listing() == {"192.0.2.7/32"}


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_ban_after_objects_removed_behind_our_back(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.ban([ban("192.0.2.7"), ban("2001:db8::/64")])
    fw_for(ns, backend).flush()          # another object: fw's caches are now stale
    fw.ban([ban("192.0.2.8"), ban("2001:db8:1::/64")])
    assert sorted(kernel_nets(ns, backend)) == ["192.0.2.8/32", "2001:db8:1::/64"]
    if backend != "nftables":
        assert len(input_rules(ns)) == 1 and len(input_rules(ns, "ip6tables")) == 1
    fw.unban(["192.0.2.8", "2001:db8:1::/64"])
    assert kernel_nets(ns, backend) == []


@needs_netns
@pytest.mark.parametrize("backend", ["ipset", "nftables"])
def test_reban_sets_the_new_timeout(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.ban([ban("192.0.2.7", 30), ban("198.51.100.0/24", 30), ban("2001:db8::/64", 30)])
    fw.ban([ban("192.0.2.7", 900), ban("198.51.100.0/24", 900), ban("2001:db8::/64", None)])
    if backend == "ipset":
        got = {m.split()[0]: int(m.split()[-1]) for name in ("logwatchd4", "logwatchd6")
               for m in ipset_members(ns, name)}
        assert got["2001:db8::/64"] == 0
    else:
        got = {}
        for setname in ("host4", "ban4", "ban6"):
            for e in nft_elements(ns, setname):
                val = e["elem"]["val"] if "elem" in e else e
                if isinstance(val, dict):
                    val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
                got[val] = e["elem"]["timeout"] if "elem" in e else 0
        assert got["2001:db8::/64"] == 0
    assert 890 <= got["192.0.2.7"] <= 900 and 890 <= got["198.51.100.0/24"] <= 900


@needs_netns
@pytest.mark.parametrize("backend", ["ipset", "nftables"])
def test_kernel_expiry(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7", 1.5), ban("2001:db8::/64", 1.5), ban("192.0.2.8", None)])
    assert len(kernel_nets(ns, backend)) == 3
    assert wait_until(lambda: sorted(kernel_nets(ns, backend)) == ["192.0.2.8/32"], timeout=6)
    assert fw.listing() == {"192.0.2.8/32"}


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_reconcile_reasserts_timeouts_and_drops_expired(ns: Netns, backend: str) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    fw.ban([ban("192.0.2.7", 30), ban("192.0.2.8", 30)])
    now = time.time()
    fw.reconcile([Ban("192.0.2.7/32", now, now + 500),
                  Ban("192.0.2.8/32", now - 60, now - 1)], now)
    assert kernel_nets(ns, backend) == ["192.0.2.7/32"]
    if backend == "ipset":
        (member,) = ipset_members(ns, "logwatchd4")
        assert 490 <= int(member.split()[-1]) <= 500
    elif backend == "nftables":
        (elem,) = nft_elements(ns, "host4")
        assert 490 <= elem["elem"]["timeout"] <= 500


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_nets_are_skipped_not_fatal(ns: Netns, backend: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    fw = fw_for(ns, backend)
    fw.setup()
    with caplog.at_level(logging.ERROR, logger="logwatchd.firewall"):
        fw.ban([ban("1.2.3.4 -j ACCEPT"), ban("0.0.0.0/0"), ban("192.0.2.7")])
    assert kernel_nets(ns, backend) == ["192.0.2.7/32"]
    assert "action=fw-skip" in caplog.text and "1.2.3.4 -j ACCEPT" in caplog.text


@needs_netns
def test_nftables_overlapping_prefix_is_skipped(ns: Netns) -> None:
    fw = fw_for(ns, "nftables")
    fw.ban([ban("10.0.0.0/8")])
    # 10.1.0.0/16 is already covered; an interval set cannot hold both. Hosts can.
    fw.ban([ban("10.1.0.0/16"), ban("192.0.2.0/24"), ban("10.1.2.3")])
    want = ["10.0.0.0/8", "10.1.2.3/32", "192.0.2.0/24"]
    assert sorted(kernel_nets(ns, "nftables")) == want
    fw.unban(["10.1.0.0/16"])                        # not an element: nothing happens
    assert sorted(kernel_nets(ns, "nftables")) == want
    fw.unban(["10.0.0.0/8", "10.1.2.3"])
    assert kernel_nets(ns, "nftables") == ["192.0.2.0/24"]


@needs_netns
def test_tool_failure_raises_with_stderr(ns: Netns) -> None:
    ns.run(["ipset", "create", "logwatchd4", "hash:ip"])      # wrong type, no timeouts
    fw = fw_for(ns, "ipset")
    with pytest.raises(FirewallError, match="logwatchd4"):
        fw.setup()
    fw = make_firewall(FirewallConfig(), netns="lw-no-such-ns")
    with pytest.raises(FirewallError, match="lw-no-such-ns"):
        fw.listing()


@needs_netns
def test_iptables_legacy_variant_works_too(ns: Netns) -> None:
    """Same layout through the legacy tools (what `update-alternatives` may have selected)."""

    class Legacy(IptablesFirewall):
        TOOLS = {4: ("iptables-legacy-save", "iptables-legacy-restore"),
                 6: ("ip6tables-legacy-save", "ip6tables-legacy-restore")}

    fw = Legacy(FirewallConfig(), netns=ns.name)
    fw.setup()
    fw.ban([ban("192.0.2.7"), ban("192.0.2.8"), ban("2001:db8::/64")])
    fw.ban([ban("192.0.2.7")])
    ns.run(["iptables-legacy", "-A", CHAIN, "-s", "203.0.113.1", "-j", "ACCEPT"])
    fw.unban(["192.0.2.8"])
    fw.reconcile([ban("192.0.2.7"), ban("2001:db8::/64")], time.time())
    assert chain_rules(ns, "iptables-legacy") == [f"-A {CHAIN} -s 192.0.2.7/32 -j DROP"]
    assert chain_rules(ns, "ip6tables-legacy") == [f"-A {CHAIN} -s 2001:db8::/64 -j DROP"]
    assert input_rules(ns, "iptables-legacy") == [f"-A INPUT -p tcp -m tcp --dport 25 -j {CHAIN}"]
    fw.flush()
    assert input_rules(ns, "iptables-legacy") == [] and fw.listing() == set()


@needs_netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_very_long_bans_are_accepted(ns: Netns, backend: str) -> None:
    """A multi-year ban (growth factor, manual --for) must not break the batch or reconcile."""
    fw = fw_for(ns, backend)
    fw.setup()
    longest = [ban("192.0.2.50", 10.0**8), ban("2001:db8:5::/64", 10.0**8), ban("192.0.2.51")]
    fw.ban(longest)
    want = sorted(["192.0.2.50/32", "2001:db8:5::/64", "192.0.2.51/32"])
    assert sorted(kernel_nets(ns, backend)) == want
    fw.reconcile(longest, time.time())
    assert sorted(kernel_nets(ns, backend)) == want
    fw.unban(["192.0.2.50/32", "2001:db8:5::/64"])
    assert kernel_nets(ns, backend) == ["192.0.2.51/32"]


@needs_netns
def test_nftables_unban_around_a_held_prefix(ns: Netns) -> None:
    """Unbanning a prefix that is not held but contains one that is must not fail the batch."""
    fw = fw_for(ns, "nftables")
    fw.ban([ban("2001:db8:1:2::/64"), ban("192.0.2.0/24"), ban("198.51.100.9")])
    fw.unban(["2001:db8::/48", "192.0.2.0/24", "198.51.100.9/32", "203.0.113.0/24"])
    assert kernel_nets(ns, "nftables") == ["2001:db8:1:2::/64"]
    # Both the held prefix and one around it in one batch (a flush of nested bans).
    fw.unban(["2001:db8::/48", "2001:db8:1:2::/64"])
    assert kernel_nets(ns, "nftables") == []
    # Our view went stale (removed by hand): unban still succeeds.
    fw.ban([ban("2001:db8:7::/64")])
    ns.run(["nft", "flush", "set", "inet", "logwatchd", "ban6"])
    fw.unban(["2001:db8:7::/64"])
    assert kernel_nets(ns, "nftables") == []


@needs_netns
def test_a_held_xtables_lock_is_an_error_within_the_bounded_wait(
        ns: Netns, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """iptables-restore waits a bounded time for the xtables lock, never the tool timeout."""
    import fcntl
    import os

    import logwatch.effectors.firewall.base
    import logwatch.effectors.firewall.iptables

    # iptables' legacy variant (Debian's iptables package ships it) is the one taking the lock.
    legacy = "/usr/sbin/xtables-legacy-multi"
    (tmp_path / "iptables-restore").symlink_to(legacy)      # it dispatches on its own name
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(logwatch.effectors.firewall.iptables, "XTABLES_WAIT", 1)
    monkeypatch.setattr(logwatch.effectors.firewall.base, "TOOL_TIMEOUT", 60.0)
    fw = fw_for(ns, "iptables")
    with open("/run/xtables.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                      # someone else holds the lock
        started = time.monotonic()
        with pytest.raises(FirewallError, match="xtables lock"):
            fw._restore(4, [f":{CHAIN} - [0:0]"])
    assert time.monotonic() - started < 30
