"""Account suspension in a real logwatchd: a log with a compromise burst (one SASL ID logging in
from many networks) -> the ID in the check_sasl_access table, checked with real `postmap -q`;
logwatchctl accounts/suspend/unsuspend; a restart keeps the suspension; hostile IDs never reach
the table; records through the daemon's on_records (a fake store: the effect table's order)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc

from logwatch.engine.model import Suspension
from logwatch.state.store import Store

pytestmark = pytest.mark.needs("postmap")

HOLD = "HOLD suspended by logwatchd (compromised?)"


def stamp() -> str:
    return time.strftime("%b %e %H:%M:%S")


def auth_line(user: str, ip: str, n: int) -> str:
    return (f"{stamp()} mx1 postfix/submission/smtpd[{2100 + n}]: 4Bx7Yq{n:05d}z: "
            f"client=unknown[{ip}], sasl_method=PLAIN, sasl_username={user}")


def postmap_q(d: DaemonProc, spec: str, key: str) -> str:
    out = subprocess.run(["postmap", "-q", key, spec], capture_output=True, text=True,
                         env=d.env(), timeout=30)
    return out.stdout.strip()


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
def daemon(tmp_path: Path):
    spec = f"hash:{tmp_path / 'sasl'}"
    d = DaemonProc(tmp_path, {"accounting": {"enabled": True, "stats_log": None,
                                             "sasl_access_map": spec,
                                             "never_suspend": ["bulk@example.org"]}})
    d.sasl = spec
    try:
        yield d.start()
    finally:
        d.stop(signal.SIGKILL)


def test_login_burst_suspends_through_the_table(daemon: DaemonProc) -> None:
    # 8 networks in the window: 7 * 5 (IPs) + 7 * 10 (networks) = 105 >= 100.
    daemon.append(*(auth_line("Victim@Example.org", f"198.51.{i}.7", i) for i in range(8)))
    wait_for(lambda: postmap_q(daemon, daemon.sasl, "victim@example.org") == HOLD)
    text = daemon.wait_log("action=suspend user=victim@example.org")
    line = next(ln for ln in text.splitlines() if "action=suspend " in ln)
    assert "WARNING" in line and "networks:70" in line and "table_action=HOLD" in line
    actions = (daemon.base / "actions.log").read_text()
    assert "action:suspend" in actions and "user:victim@example.org" in actions
    acc = json.loads(daemon.ctl("accounts", "--json").stdout)
    (sus,) = acc["suspended"]
    assert sus["user"] == "victim@example.org" and sus["source"] == "auto"
    assert "victim@example.org" in daemon.ctl("accounts").stdout
    status = daemon.req(cmd="status")
    assert status["risk"]["suspensions"] == 1 and status["risk"]["logins"] == 8
    assert "1 suspended" in daemon.ctl("status").stdout

    # A restart keeps it: in the store, and the table rebuilt from it.
    daemon.stop()
    rows = Store(daemon.base / "state" / "state.db").load_suspensions()
    assert [s.user for s in rows] == ["victim@example.org"]
    daemon.start()
    assert postmap_q(daemon, daemon.sasl, "victim@example.org") == HOLD
    out = daemon.ctl("unsuspend", "VICTIM@example.org")
    assert out.returncode == 0, out.stderr
    assert postmap_q(daemon, daemon.sasl, "victim@example.org") == ""
    assert daemon.ctl("unsuspend", "victim@example.org").returncode == 1


def test_manual_suspend_never_suspend_and_hostile_names(daemon: DaemonProc) -> None:
    out = daemon.ctl("suspend", "carol@example.org", "--for", "10m")
    assert out.returncode == 0, out.stderr
    assert postmap_q(daemon, daemon.sasl, "carol@example.org") == HOLD
    refused = daemon.ctl("suspend", "bulk@example.org")
    assert refused.returncode == 1 and "never_suspend" in refused.stderr
    for bad in ("eve OK", "eve\nmallory", "#eve", "eve\tREJECT"):
        res = daemon.req(cmd="suspend", user=bad)
        assert not res["ok"], bad
    # A login burst of an allowed ID is counted, never suspended.
    daemon.append(*(auth_line("bulk@example.org", f"203.0.{i}.9", i) for i in range(12)))
    daemon.append(auth_line("marker", "192.0.2.1", 99))
    wait_for(lambda: any(a["user"] == "marker"
                         for a in daemon.req(cmd="accounts", limit=None)["accounts"]))
    assert postmap_q(daemon, daemon.sasl, "bulk@example.org") == ""
    table = (daemon.base / "sasl.db").exists()
    assert table
    dump = subprocess.run(["postmap", "-s", daemon.sasl], capture_output=True, text=True,
                          env=daemon.env(), timeout=30).stdout
    assert dump.splitlines() == [f"carol@example.org\t{HOLD}"]


def test_on_records_applies_in_the_durability_order(tmp_path: Path, clock) -> None:
    """Records fed to the daemon: the table first, then the store, then the logs."""
    from dataclasses import dataclass

    from logwatch.daemon.app import Daemon
    from logwatch.daemon.config import Config
    from logwatch.daemon.factory import Parts
    from logwatch.engine.core import Engine

    calls: list[str] = []

    class Table:
        def add(self, sus: list[Suspension]) -> None:
            calls.append("table:" + ",".join(s.user for s in sus))

        def remove(self, users: list[str]) -> None:
            calls.append("table-remove")

    store = Store(tmp_path / "state.db")

    @dataclass
    class Rec:
        sasl_user: str
        client_ip: str
        recipients: tuple
        done_time: float

    @dataclass
    class Rcpt:
        address: str
        status: str = "sent"
        dsn: str = "2.0.0"

    cfg = Config()
    cfg.accounting.enabled = True
    engine = Engine(cfg.relay, cfg.bans, clock=clock, accounting=cfg.accounting)
    d = Daemon(cfg, None, None, clock=clock, parts=Parts(store=store, engine=engine,
                                                           suspension_table=Table()))
    rcpts = tuple(Rcpt(f"r{i}@example.net") for i in range(50))
    d.on_records([Rec("mallory", "192.0.2.5", rcpts, clock.now) for _ in range(4)])
    assert calls == ["table:mallory"]
    (sus,) = store.load_suspensions()
    assert sus.user == "mallory" and sus.score >= 100
    assert store.load_suspension_history() == [("mallory", 1, clock.now)]
    assert d.counters.actions["suspend"] == 1
    # The minute's counts reach the store once it ended; the window is saved with them.
    start = int(clock.now // 60) * 60
    d.account_keeper.flush(clock.now)
    assert store.counts("sent", start, start + 60, 60) == [(start, 0.0)]
    d.account_keeper.flush(start + 60)
    assert store.counts("sent", start, start + 60, 60) == [(start, 4.0)]
    assert store.counts("sender_rcpt:mallory", start, start + 60, 60) == [(start, 200.0)]
    assert [u for u, _ in store.load_account_windows()] == ["mallory"]
    store.close()


def test_shares_the_policy_services_table(tmp_path: Path) -> None:
    """policy.sasl_access_map = accounting.sasl_access_map: one table, both contributors."""
    spec = f"hash:{tmp_path / 'sasl'}"
    blocked = tmp_path / "blocked"
    blocked.write_text("blocked@example.org\n")
    d = DaemonProc(tmp_path, {"accounting": {"enabled": True, "stats_log": None,
                                             "sasl_access_map": spec},
                              "policy": {"sasl_access_map": spec,
                                         "sasl_block_list": str(blocked)}})
    try:
        d.start()
        assert d.ctl("suspend", "dave@example.org").returncode == 0
        dump = subprocess.run(["postmap", "-s", spec], capture_output=True, text=True,
                              env=d.env(), timeout=30).stdout
        assert sorted(dump.splitlines()) == [
            "blocked@example.org\tREJECT 5.7.1 Authentication ID blocked",
            f"dave@example.org\t{HOLD}"]
        assert d.ctl("unsuspend", "dave@example.org").returncode == 0
        assert postmap_q(d, spec, "dave@example.org") == ""
        assert postmap_q(d, spec, "blocked@example.org").startswith("REJECT")
    finally:
        d.stop(signal.SIGKILL)


def test_hostile_login_names_never_reach_the_table(tmp_path: Path) -> None:
    """Names with blanks, tabs, control characters or a comment mark, through the whole
    pipeline with a threshold any two networks reach: only the real subjects are keys."""
    spec = f"hash:{tmp_path / 'sasl'}"
    d = DaemonProc(tmp_path, {"accounting": {"enabled": True, "stats_log": None,
                                             "sasl_access_map": spec, "suspend_score": 1}})
    names = ["eve OK", "mallory\tREJECT", "dave REJECT 5.7.1 x", "#root", "bob\x1b[31m",
             "ok"]
    try:
        d.start()
        n = 0
        for name in names:
            for net in (1, 2):
                n += 1
                d.append(auth_line(name, f"198.51.{net}.{n}", n))
        wait_for(lambda: postmap_q(d, spec, "ok") == HOLD)
        dump = subprocess.run(["postmap", "-s", spec], capture_output=True, text=True,
                              env=d.env(), timeout=30).stdout
        assert dump.splitlines() == [f"ok\t{HOLD}"]
        for cut in ("eve", "mallory", "dave", "bob"):
            assert postmap_q(d, spec, cut) == ""
        assert d.req(cmd="status")["risk"]["invalid_users"] >= 4
    finally:
        d.stop(signal.SIGKILL)


def test_reload_changes_the_action_and_allow_list(daemon: DaemonProc) -> None:
    assert daemon.ctl("suspend", "frank@example.org").returncode == 0
    assert daemon.ctl("suspend", "gina@example.org").returncode == 0
    daemon.settings["accounting"].update(suspend_action="REJECT",
                                         never_suspend=["gina@example.org"])
    daemon.write_config()
    assert daemon.req(cmd="reload")["ok"]
    assert postmap_q(daemon, daemon.sasl, "frank@example.org") == (
        "REJECT 5.7.1 suspended by logwatchd (compromised?)")
    assert postmap_q(daemon, daemon.sasl, "gina@example.org") == ""
    (sus,) = daemon.req(cmd="accounts")["suspended"]
    assert sus["user"] == "frank@example.org"
    # The risk keys applied: no "needs a restart" for them.
    assert "key=accounting" not in daemon.stderr()


def test_a_deleted_table_is_written_again(tmp_path: Path, clock) -> None:
    """The map check (each minute) rebuilds a table someone deleted, from the suspensions."""
    import argparse

    from logwatch.daemon.app import Daemon
    from logwatch.daemon.config import Config
    from logwatch.daemon.factory import Parts
    from logwatch.daemon.suspensions import SaslContributors, SuspensionTable
    from logwatch.engine.core import Engine

    class Table:
        def __init__(self) -> None:
            self.file: dict[str, str] | None = None

        def sync(self, entries):
            if self.file == dict(entries):
                return False
            self.file = dict(entries)
            return True

    table = Table()
    cfg = Config()
    cfg.accounting.enabled = True
    engine = Engine(cfg.relay, cfg.bans, clock=clock, accounting=cfg.accounting)
    sink = SuspensionTable(SaslContributors(table).set, "HOLD")
    d = Daemon(cfg, None, argparse.Namespace(), clock=clock, parts=Parts(
        store=Store(tmp_path / "state.db"), engine=engine, suspension_table=sink))
    d.apply(engine.accounts.suspend("ivy"))
    assert table.file == {"ivy": HOLD}
    table.file = None                       # deleted behind our back
    d.upkeep._on_mapcheck(clock.now)
    assert table.file == {"ivy": HOLD}
    d.store.close()
