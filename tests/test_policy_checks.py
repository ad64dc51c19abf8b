"""The policy checks (engine/policy/): banned, SASL block list, S25R, first-match order and
injection. Pure logic with a real Engine; no sockets."""

from __future__ import annotations

import time

import pytest

from logwatch.daemon.config import BanConfig, RelayConfig
from logwatch.daemon.policyconfig import PolicyConfig, QuotaConfig
from logwatch.engine.core import Engine
from logwatch.engine.model import Ban
from logwatch.engine.policy import Decider, PolicyContext, PolicyRequest
from logwatch.engine.policy.request import MalformedRequest, parse_request
from logwatch.engine.policy.s25r import name_rule
from logwatch.engine.policy.saslblock import parse_block_list
from logwatch.engine.whitelist import Whitelist


def make_engine(clock, mynetworks=("10.0.0.0/8",)) -> Engine:
    return Engine(RelayConfig(mynetworks=list(mynetworks)), BanConfig(whitelist=None),
                  whitelist=Whitelist(), mynetworks=list(mynetworks), own_addresses=[],
                  clock=clock)


def req(**attrs: str) -> PolicyRequest:
    return PolicyRequest({"request": "smtpd_access_policy", "protocol_state": "RCPT", **attrs})


def decider(clock, files: dict[str, str] | None = None, quotas=(), **policy) -> Decider:
    files = files or {}
    ctx = PolicyContext(engine=make_engine(clock), read_text=lambda p: files[p])
    cfg = PolicyConfig(**{"s25r": "defer", **policy})
    if cfg.sasl_block_list:
        ctx.sasl_blocked = parse_block_list(files[cfg.sasl_block_list])[0]
    return Decider.build(cfg, list(quotas), ctx)


# -- S25R -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, rule", [
    ("p1234-ipbf01.example.ne.jp", "s25r-rule0"),       # the example
    ("h219-110-12-34.example.ne.jp", "s25r-rule0"),
    ("host12345.example.com", "s25r-rule1"),
    ("1a.b.example.co.jp", "s25r-rule2"),
    ("x2.ab3-4.example.com", "s25r-rule3"),
    ("ab9.cd8.example.co.uk", "s25r-rule4"),
    ("dhcpclient9.example.net", "s25r-rule5"),
    ("adsl-host7.example.net", "s25r-rule5"),
])
def test_s25r_rules_match_dynamic_names(name: str, rule: str) -> None:
    assert name_rule(name) == rule
    assert name_rule(name.upper()) == rule


@pytest.mark.parametrize("name", ["mail.example.org", "mx1.example.com", "smtp.example.co.jp",
                                  "example.org", "mail-out.example.net", "x" * 300])
def test_s25r_spares_server_names(name: str) -> None:
    assert name_rule(name) is None


def test_s25r_hostile_64k_names_are_fast() -> None:
    """The patterns backtrack; names that cannot be DNS names are never matched, so a 64 KB
    attacker-chosen name costs microseconds."""
    hostile = ["1a" * 32768, "1." * 32768, "dhcp" + "a" * 65536, "1-" * 32768 + ".x",
               ("a1" * 31 + ".") * 1000]
    start = time.perf_counter()
    for name in hostile:
        assert name_rule(name) is None
    assert time.perf_counter() - start < 0.5
    # The longest name that is matched (253 characters) is still quick in the worst case.
    start = time.perf_counter()
    for name in ["1a" * 31 + "b" + ("." + "1a" * 30) * 3, "a1." * 84]:
        name_rule(name[:253])
    assert time.perf_counter() - start < 0.5


def test_s25r_unknown_exemptions_and_lists(clock) -> None:
    files = {"/w": "^192\\.0\\.2\\.50$\n\\.trusted\\.example$\n", "/b": "^spam\\.\n# c\n"}
    d = decider(clock, files, s25r_whitelist="/w", s25r_blacklist="/b")
    engine = d.context.engine
    unknown = {"client_name": "unknown", "reverse_client_name": "unknown"}
    assert d.decide(req(client_address="192.0.2.1", **unknown), clock()).rule == "s25r-unknown"
    dynamic = {"client_name": "p1234-ipbf01.example.ne.jp",
               "reverse_client_name": "p1234-ipbf01.example.ne.jp"}
    v = d.decide(req(client_address="192.0.2.1", **dynamic), clock())
    assert (v.rule, v.action.split()[0]) == ("s25r-rule0", "DEFER_IF_PERMIT")
    # Never for an authenticated, granted, mynetworks or whitelisted client.
    assert d.decide(req(client_address="192.0.2.1", sasl_username="bob", **dynamic),
                    clock()).action == "DUNNO"
    assert d.decide(req(client_address="10.1.2.3", **dynamic), clock()).action == "DUNNO"
    engine.grant("192.0.2.7")
    assert d.decide(req(client_address="192.0.2.7", **dynamic), clock()).action == "DUNNO"
    assert d.decide(req(client_address="192.0.2.50", **unknown), clock()).action == "DUNNO"
    assert d.decide(req(client_address="192.0.2.8", client_name="a1-b2.trusted.example",
                        reverse_client_name="a1-b2.trusted.example"), clock()).action == "DUNNO"
    assert d.decide(req(client_address="192.0.2.9", client_name="spam.example.org",
                        reverse_client_name="spam.example.org"), clock()).rule == "s25r-blacklist"
    assert d.decide(req(client_address="192.0.2.9", client_name="mail.example.org",
                        reverse_client_name="mail.example.org"), clock()).action == "DUNNO"


def test_s25r_modes(clock) -> None:
    dynamic = dict(client_address="192.0.2.1", client_name="unknown",
                   reverse_client_name="p1234-ipbf01.example.ne.jp", instance="A1")
    assert decider(clock, s25r="reject").decide(req(**dynamic), clock()).action.startswith(
        "REJECT 5.7.1")
    assert decider(clock, s25r="off").decide(req(**dynamic), clock()).action == "DUNNO"
    assert decider(clock, s25r="on").decide(req(**dynamic), clock()).action.startswith(
        "DEFER_IF_PERMIT 4.7.1")
    scored = decider(clock, s25r="score")
    for _ in range(3):                       # one session asks several times: one note
        assert scored.decide(req(**dynamic), clock()).action == "DUNNO"
    assert [(n.kind, n.ip, n.rule) for n in scored.context.notes] == [
        ("s25r", "192.0.2.1", "s25r-rule0")]
    scored.decide(req(**{**dynamic, "instance": "A2"}), clock(), commit=False)
    assert len(scored.context.notes) == 1    # policy-test notes nothing


# -- banned, SASL block list, order ----------------------------------------------------

def test_banned_client_and_order(clock) -> None:
    files = {"/block": "# smtpauth-manager reject_ids.txt\nMallory@Example.org\n\nbad id\n"}
    d = decider(clock, files, sasl_block_list="/block")
    engine = d.context.engine
    engine.ban("198.51.100.0/24")               # not offender-sized: the prefix walk
    engine.ban("203.0.113.5")
    name = {"client_name": "unknown", "reverse_client_name": "unknown"}
    v = d.decide(req(client_address="203.0.113.5", sasl_username="mallory@example.org", **name),
                 clock())
    assert (v.rule, v.action) == ("banned", "REJECT 5.7.1 Access denied")   # first match wins
    assert d.decide(req(client_address="198.51.100.77"), clock()).rule == "banned"
    assert d.decide(req(client_address="::ffff:203.0.113.5"), clock()).rule == "banned"
    v = d.decide(req(client_address="192.0.2.1", sasl_username="MALLORY@example.ORG", **name),
                 clock())
    assert v.rule == "sasl-block" and v.action.startswith("REJECT 5.7.1")
    assert d.decide(req(client_address="192.0.2.1", sasl_username="alice", **name),
                    clock()).action == "DUNNO"    # authenticated: no S25R either
    engine.unban("203.0.113.5")
    assert d.decide(req(client_address="203.0.113.5", client_name="mail.example.org",
                        reverse_client_name="mail.example.org"), clock()).rule == "none"


def test_banned_lookup_does_not_scan(clock) -> None:
    engine = make_engine(clock)
    nets = [f"100.{i >> 8 & 255}.{i & 255}.1/32" for i in range(100_000 // 4)]
    nets += [f"2001:db8:{i:x}::/48" for i in range(2000)]
    engine.load([], [Ban(net, clock(), None, 5.0, {}, 1, "auto") for net in nets], [])
    start = time.perf_counter()
    for _ in range(2000):
        assert engine.banned_net("100.0.5.1") == "100.0.5.1/32"
        assert engine.banned_net("2001:db8:7::99") == "2001:db8:7::/48"
        assert engine.banned_net("192.0.2.1") is None
    assert time.perf_counter() - start < 2.0      # a scan would take minutes


def test_block_list_parsing() -> None:
    ids, warnings = parse_block_list("a@b\n  C@D  # comment\n#x\nbad id\n" + "e" * 600 + "\n")
    assert ids == {"a@b", "c@d"}
    assert len(warnings) == 2 and "line 4" in warnings[0]


# -- injection ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "x\nsasl_username=mallory", "x\n\naction=OK", "action=OK", "a=b=c", "x\0sasl_username=m",
])
def test_injected_attributes_never_decide_about_someone_else(clock, value: str) -> None:
    """A value cannot carry a second attribute: the wire format ends a value at the newline,
    and a request naming an attribute twice is malformed (answered DUNNO), never decided."""
    files = {"/block": "mallory\n"}
    d = decider(clock, files, sasl_block_list="/block", s25r="off")
    for field in ("client_name", "helo_name", "sender", "sasl_username"):
        wire = (f"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
                f"{field}={value}\nsasl_username=alice").encode()
        if field == "sasl_username":
            wire = wire.rsplit(b"\n", 1)[0]
        try:
            r = parse_request(wire)
        except MalformedRequest:
            continue
        v = d.decide(r, clock())
        assert v.action == "DUNNO", (field, value, v)
        assert r.get("sasl_username") in ("alice", value)


def test_request_parsing() -> None:
    r = parse_request(b"request=smtpd_access_policy\nprotocol_state=rcpt\n"
                      b"client_address=::ffff:192.0.2.1\nrecipient_count=3\nsize=x\nfoo=bar")
    assert (r.protocol_state, r.client_address, r.recipient_count, r.size) == (
        "RCPT", "192.0.2.1", 3, 0)
    assert r.get("foo") == "bar"                 # unknown attributes are kept and ignored
    for bad in (b"", b"request=smtpd_access_policy\nnoequals",
                b"request=other", b"request=smtpd_access_policy\nrequest=smtpd_access_policy",
                b"request=smtpd_access_policy\n=v", b"request=smtpd_access_policy\nna me=v"):
        with pytest.raises(MalformedRequest):
            parse_request(bad)


def test_quota_check_is_last_and_counts_only_what_passed(clock) -> None:
    q = QuotaConfig("ip", "client_address", "recipients", 2, 60.0)
    d = decider(clock, quotas=[q], s25r="defer")
    unknown = {"client_name": "unknown", "reverse_client_name": "unknown"}
    for i in range(3):     # deferred by S25R before the quota: nothing counted
        assert d.decide(req(client_address="192.0.2.1", instance=f"s{i}", recipient=f"r{i}",
                            **unknown), clock()).rule == "s25r-unknown"
    good = {"client_name": "mail.example.org", "reverse_client_name": "mail.example.org"}
    rules = [d.decide(req(client_address="192.0.2.1", instance="i", recipient=f"r{i}", **good),
                      clock()).rule for i in range(3)]
    assert rules == ["none", "none", "quota:ip"]
