"""Whitelist file parsing and membership (addresses, networks, loopback, bad lines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatch.engine.whitelist import NetSet, Whitelist, normalize_net, parse_net

SAMPLE = """\
# blocksmtp whitelist
192.0.2.5            # a single host
198.51.100.0/24

  2001:db8:1::/48   # a v6 net
[2001:db8:2::]/64
::ffff:203.0.113.9
10.0.0.1/8          # host bits set: becomes 10.0.0.0/8
not-an-address
192.0.2.300
1.2.3.4 5.6.7.8
2001:db8::/129
#192.0.2.99
"""


def test_parse_file_with_comments_and_bad_lines(tmp_path: Path):
    path = tmp_path / "whitelist"
    path.write_text(SAMPLE)
    wl, warnings = Whitelist.from_file(path)
    assert wl.cidrs == ("127.0.0.0/8", "::1/128", "192.0.2.5/32", "198.51.100.0/24",
                        "2001:db8:1::/48", "2001:db8:2::/64", "203.0.113.9/32", "10.0.0.0/8")
    bad_lines = sorted(int(w.split(":")[1]) for w in warnings if "skipped" in w)
    assert bad_lines == [9, 10, 11, 12]
    assert all(w.startswith(f"{path}:") for w in warnings)
    assert any(":8:" in w and "host bits" in w for w in warnings)
    assert "192.0.2.99" not in wl


@pytest.mark.parametrize("ip,expected", [
    ("192.0.2.5", True), ("192.0.2.6", False), ("198.51.100.255", True), ("198.51.101.0", False),
    ("2001:db8:1:ffff::1", True), ("2001:db8:2::abcd", True), ("2001:db8:3::1", False),
    ("203.0.113.9", True), ("::ffff:203.0.113.9", True), ("::ffff:192.0.2.5", True),
    ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("::2", False),
    ("10.200.1.1", True), ("11.0.0.0", False),
])
def test_contains_address(ip, expected):
    wl, _ = Whitelist.from_lines(SAMPLE.splitlines())
    assert wl.contains(ip) is expected
    assert (ip in wl) is expected


def test_network_semantics_contains_whole_overlaps_any():
    wl, _ = Whitelist.from_lines(["198.51.100.0/25", "198.51.100.128/25", "2001:db8::/64"])
    # Adjacent halves together cover the /24.
    assert wl.contains("198.51.100.0/24")
    assert not wl.contains("198.51.100.0/23") and wl.overlaps("198.51.100.0/23")
    assert wl.contains("2001:db8::/80") and not wl.contains("2001:db8::/63")
    assert wl.overlaps("2001:db8::/63") and not wl.overlaps("2001:db8:1::/64")
    assert wl.overlaps("0.0.0.0/0")          # loopback is inside everything
    assert not wl.contains("192.0.2.0/24") and not wl.overlaps("192.0.2.0/24")


def test_loopback_always_present():
    wl = Whitelist()
    assert wl.contains("127.0.0.1") and wl.contains("::1") and wl.contains("127.0.0.0/8")
    assert not wl.contains("192.0.2.1")


def test_missing_file_is_loopback_plus_warning(tmp_path: Path):
    wl, warnings = Whitelist.from_file(tmp_path / "nope")
    assert wl.cidrs == ("127.0.0.0/8", "::1/128")
    assert len(warnings) == 1 and "not found" in warnings[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_warns(tmp_path: Path):
    path = tmp_path / "wl"
    path.write_text("192.0.2.1\n")
    path.chmod(0)
    wl, warnings = Whitelist.from_file(path)
    assert "cannot read" in warnings[0] and not wl.contains("192.0.2.1")


def test_directory_instead_of_file_warns(tmp_path: Path):
    wl, warnings = Whitelist.from_file(tmp_path)
    assert len(warnings) == 1 and "cannot read" in warnings[0]
    assert wl.contains("127.0.0.1")


def test_binary_garbage_only_spoils_its_line(tmp_path: Path):
    path = tmp_path / "wl"
    path.write_bytes(b"192.0.2.1\n\xff\xfe\x00garbage\n\n198.51.100.1\r\n")
    wl, warnings = Whitelist.from_file(path)
    assert wl.contains("192.0.2.1") and wl.contains("198.51.100.1")
    assert len(warnings) == 1 and ":2:" in warnings[0]


def test_invalid_query_raises():
    with pytest.raises(ValueError):
        Whitelist().contains("banana")
    with pytest.raises(ValueError):
        Whitelist().contains("fe80::1%eth0")


def test_normalize_net():
    assert normalize_net("192.0.2.7") == "192.0.2.7/32"
    assert normalize_net("2001:DB8:0::1") == "2001:db8::1/128"
    assert normalize_net("2001:db8::1/64") == "2001:db8::/64"
    assert normalize_net("[2001:db8::]/48") == "2001:db8::/48"
    assert normalize_net("::ffff:192.0.2.0/120") == "192.0.2.0/24"
    with pytest.raises(ValueError):
        parse_net("[2001:db8::/48")


def test_large_whitelist_loads_fast_enough(tmp_path: Path):
    path = tmp_path / "wl"
    path.write_text("".join(f"10.{i >> 8}.{i & 255}.0/24\n" for i in range(20_000)))
    wl, warnings = Whitelist.from_file(path)
    assert warnings == [] and len(wl) == 20_002
    assert wl.contains("10.77.3.200") and wl.contains("10.0.0.0/10")


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), max_size=20),
       st.integers(0, 2**32 - 1))
def test_property_netset_matches_linear_scan(nets, probe):
    import ipaddress

    texts = [str(ipaddress.ip_network((addr, plen), strict=False)) for addr, plen in nets]
    s = NetSet(texts)
    expected = any(ipaddress.ip_address(probe) in ipaddress.ip_network(t) for t in texts)
    assert s.contains(str(ipaddress.ip_address(probe))) is expected


@pytest.mark.parametrize("entry", [
    "10/8", "172/8", "1.2.3", "10.1/16", "010.1.1.1", "0x0a000001", "10.0.0.0/0.0.0.255",
    "1.2.3.4/8x", "1.2.3.4/-1",
])
def test_shorthands_are_refused_not_guessed(entry):
    # Debian's netaddr 0.8 read "10/8" as 10.0.0.0/8 and "1.2.3" as 1.2.3.0/32: silently wrong.
    wl, warnings = Whitelist.from_lines(["192.0.2.1", entry], "wl")
    assert wl.cidrs == ("127.0.0.0/8", "::1/128", "192.0.2.1/32")
    (warning,) = warnings
    assert warning.startswith("wl:2: bad entry") and warning.endswith("line skipped")


def test_origins_name_file_and_line(tmp_path: Path):
    path = tmp_path / "whitelist"
    path.write_text("# office\n192.0.2.0/24\n\n2001:db8::/32  # v6\n192.0.2.7\n")
    wl, warnings = Whitelist.from_file(path)
    assert warnings == []
    assert wl.origins("192.0.2.7") == [(str(path), 2, "192.0.2.0/24"), (str(path), 5, "192.0.2.7/32")]
    assert wl.origins("2001:db8:1::/64") == [(str(path), 4, "2001:db8::/32")]
    assert wl.origins("127.0.0.2") == [("built-in", None, "127.0.0.0/8")]
    assert wl.origins("198.51.100.1") == []


def test_very_wide_entries_apply_with_a_warning():
    wl, warnings = Whitelist.from_lines(["0.0.0.0/0", "10.0.0.0/8", "::/0", "2001::/16"], "wl")
    assert "203.0.113.1" in wl and "2002::1" in wl
    assert warnings == [
        "wl:1: '0.0.0.0/0' is wider than /8: nothing in 0.0.0.0/0 will ever be banned",
        "wl:3: '::/0' is wider than /16: nothing in ::/0 will ever be banned"]
