"""The daemon's policy side without a process: the check_sasl_access table as the union of its
contributors (real postmap), and a reload keeping the quota counts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from postfix_helpers import postfix_config_dir

from logwatch.daemon.config import parse_config
from logwatch.daemon.factory import Parts
from logwatch.daemon.loop import Loop
from logwatch.daemon.policyside import PolicySide
from logwatch.engine.policy import PolicyRequest
from logwatch.state.policystore import PolicyStore
from logwatch.state.store import Store


@pytest.fixture
def side(tmp_path: Path, clock, monkeypatch):
    store = Store(tmp_path / "state.db")
    parts = Parts(store=store)
    fed: list = []
    s = PolicySide(Loop(clock), parts, fed.extend, lambda msg: None)
    s.fed = fed
    yield s
    s.close()           # the writer process too
    store.close()


def lookup(cfdir: str, spec: str, key: str) -> str:
    return subprocess.run(["postmap", "-c", cfdir, "-q", key, spec], capture_output=True,
                          text=True, timeout=30).stdout.strip()


@pytest.mark.needs("postmap")
def test_sasl_table_is_the_union_of_contributors(side, tmp_path: Path, monkeypatch) -> None:
    with postfix_config_dir() as cfdir:
        monkeypatch.setenv("MAIL_CONFIG", cfdir)
        block = tmp_path / "block"
        block.write_text("mallory\n")
        spec = f"hash:{tmp_path}/sasl"
        cfg = parse_config(f"policy:\n  sasl_block_list: {block}\n  sasl_access_map: {spec}\n")
        side.setup(cfg, dry_run=False)
        assert lookup(cfdir, spec, "mallory") == "REJECT 5.7.1 Authentication ID blocked"
        side.set_sasl_entries("accounting", {"Eve@Example.org": "HOLD suspended by quota",
                                             "mallory": "HOLD other"})
        assert lookup(cfdir, spec, "eve@example.org") == "HOLD suspended by quota"
        assert lookup(cfdir, spec, "mallory") == "REJECT 5.7.1 Authentication ID blocked"
        side.set_sasl_entries("accounting", {})
        assert lookup(cfdir, spec, "eve@example.org") == ""
        assert lookup(cfdir, spec, "mallory") == "REJECT 5.7.1 Authentication ID blocked"


def test_reload_keeps_quota_counts_and_test_counts_nothing(side, clock) -> None:
    text = ("policy:\n  listen: inet:127.0.0.1:1\n  s25r: score\nquotas:\n"
            "  - {name: q, key: client_address, count: recipients, limit: 2, period: 600}\n")
    side.setup(parse_config(text), dry_run=False)

    def ask(i: int, **kw: str) -> str:
        return side.answer(PolicyRequest({"request": "smtpd_access_policy",
                                          "protocol_state": "RCPT", "client_address": "192.0.2.1",
                                          "instance": f"i{i}", "recipient": "r", **kw}))
    assert side.test({"protocol_state": "RCPT", "client_address": "192.0.2.1",
                      "instance": "t", "recipient": "r"}).rule == "none"
    assert ask(1, reverse_client_name="mail.example.org") == "DUNNO"
    side.reconfigure(parse_config(text.replace("limit: 2", "limit: 3")), dry_run=False)
    # the count so far (1) is kept: two more fit under the new limit of 3
    assert [ask(i, reverse_client_name="mail.example.org") for i in (2, 3, 4)] == [
        "DUNNO", "DUNNO", "DEFER_IF_PERMIT 4.7.1 Quota q exceeded, try again later"]
    # score mode: the note becomes an s25r event on the "policy-notes" timer
    assert ask(9, reverse_client_name="unknown").startswith("DEFER")   # the quota is full
    side.loop.run_timers(clock() + 1)
    assert [(e.kind, e.ip, e.rule) for e in side.fed] == [("s25r", "192.0.2.1", "s25r-unknown")]
    assert not side.loop.armed("policy-notes")     # one-shot: the loop must not spin
    side.flush(clock())
    rows = side.verdicts(None, "192.0.2.1", None, 10)
    assert [r.rule for r in rows] == ["quota:q", "quota:q"]


def test_a_dead_writer_process_leaves_the_writing_to_the_loop(side, clock) -> None:
    text = ("policy:\n  listen: inet:127.0.0.1:1\nquotas:\n"
            "  - {name: q, key: client_address, count: recipients, limit: 1, period: 600}\n")
    side.setup(parse_config(text), dry_run=False)
    assert side.writer is not None and side.status()["writer_backlog"] == 0
    side.writer.proc.kill()
    deadline = time.monotonic() + 10
    while side.writer is not None and time.monotonic() < deadline:
        side.loop.turn([])
    assert side.writer is None                # noticed on the loop, fd unregistered
    for i in (1, 2):
        side.answer(PolicyRequest({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                                   "client_address": "192.0.2.9", "instance": f"i{i}",
                                   "recipient": "r"}))
    side.flush(clock())
    assert [r.rule for r in side.verdicts(None, "192.0.2.9", None, 10)] == ["quota:q"]
    counts = PolicyStore(side.parts.store).load_quota_counts()
    assert [(q, k) for q, k, _, _ in counts] == [("q", "192.0.2.9")]


def test_a_changed_s25r_list_is_reread_and_the_quota_counts_kept(side, clock,
                                                                 tmp_path: Path) -> None:
    white = tmp_path / "s25r-white"
    white.write_text("# none yet\n")
    text = (f"policy:\n  listen: inet:127.0.0.1:1\n  s25r: defer\n  s25r_whitelist: {white}\n"
            "quotas:\n"
            "  - {name: q, key: client_address, count: recipients, limit: 2, period: 600}\n")
    side.setup(parse_config(text), dry_run=False)
    quotas = side.quotas

    def ask(i: int, name: str) -> str:
        return side.answer(PolicyRequest({"request": "smtpd_access_policy",
                                          "protocol_state": "RCPT", "client_address": "192.0.2.1",
                                          "instance": f"i{i}", "recipient": "r",
                                          "reverse_client_name": name}))
    assert ask(1, "mail.example.org") == "DUNNO"                     # counted once
    assert ask(2, "unknown").startswith("DEFER")                      # S25R
    white.write_text("^192\\.0\\.2\\.1$\n")
    stat = white.stat()
    os.utime(white, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    side.loop.run_timers(clock() + 1)                                 # the "policy" timer
    assert side.quotas is quotas                                      # the same counters
    assert ask(3, "unknown") == "DUNNO"                               # whitelisted now
    assert ask(4, "unknown") == "DEFER_IF_PERMIT 4.7.1 Quota q exceeded, try again later"


def test_a_changed_quota_profile_is_reread(side, clock, tmp_path: Path) -> None:
    profiles = tmp_path / "quota-profiles"
    profiles.write_text("# nobody special yet\n")
    side.setup(parse_config(
        "policy:\n  listen: inet:127.0.0.1:1\nquotas:\n"
        "  - {name: q, key: sasl_username, count: recipients, limit: 1, period: 600, "
        f"profiles: {profiles}}}\n"), dry_run=False)

    def ask(i: int) -> str:
        return side.answer(PolicyRequest({"request": "smtpd_access_policy",
                                          "protocol_state": "RCPT", "sasl_username": "Bob",
                                          "client_address": "192.0.2.1", "instance": f"i{i}",
                                          "recipient": "r"}))
    assert [ask(1), ask(2)] == ["DUNNO", "DEFER_IF_PERMIT 4.7.1 Quota q exceeded, try again "
                                         "later"]
    profiles.write_text("bob 3\n")
    stat = profiles.stat()
    os.utime(profiles, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    side.loop.run_timers(clock() + 1)                                 # the "policy" timer
    # bob's limit is 3 now, and the one recipient counted so far is kept
    assert [ask(3), ask(4), ask(5)[:5]] == ["DUNNO", "DUNNO", "DEFER"]
