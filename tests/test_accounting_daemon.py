"""The accounting in a real logwatchd: a kill -9 in the middle of a burst of thousands of
messages, a restart, and every message is in the stats log exactly once; `logwatchctl
messages` and its filters; the records' subscribers."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc

from logwatch.daemon.statslog import parse_line

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from messagelog import generate_lines  # noqa: E402

BURST = 4000          # messages (about 32,000 lines)


def stats_lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [dict(parse_line(line)) for line in path.read_text().splitlines()]


def wait_for(pred, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon(tmp_path: Path):
    d = DaemonProc(tmp_path, {"accounting": {"enabled": True,
                                             "stats_log": str(tmp_path / "stats.log")}})
    try:
        yield d
    finally:
        d.stop(signal.SIGKILL) if d.proc and d.proc.poll() is None else None


def test_kill_9_in_a_burst_accounts_every_message_exactly_once(daemon: DaemonProc,
                                                              tmp_path: Path) -> None:
    kill_9_in_a_burst(daemon, tmp_path / "stats.log")


def kill_9_in_a_burst(daemon: DaemonProc, stats: Path) -> None:
    """BURST messages, a kill -9 half way, a restart: each in the stats log exactly once."""
    lines = list(generate_lines(BURST, seed=5, window=30))
    daemon.start()
    half = len(lines) // 2
    with open(daemon.log, "a") as fh:
        for i in range(0, half, 400):           # appended in pieces, as Postfix writes
            fh.write("".join(line + "\n" for line in lines[i:min(i + 400, half)]))
            fh.flush()
    # Killed once some records are in the stats log and the rest is still being read.
    wait_for(lambda: len(stats_lines(stats)) > 100, what="the first stats lines")
    with open(daemon.log, "a") as fh:
        fh.write("".join(line + "\n" for line in lines[half:half + 3000]))
    daemon.send(signal.SIGKILL)
    daemon.proc.wait(timeout=10)
    before = len(stats_lines(stats))
    assert before < BURST               # killed with messages still to account
    with open(daemon.log, "a") as fh:
        fh.write("".join(line + "\n" for line in lines[half + 3000:]))
    daemon.start()
    wait_for(lambda: len(stats_lines(stats)) >= BURST, timeout=90, what=f"{BURST} stats lines")
    time.sleep(1.5)                              # nothing more may come
    found = stats_lines(stats)
    queue_ids = [f["queue_id"] for f in found]
    assert len(queue_ids) == len(set(queue_ids)) == BURST, (before, len(queue_ids))
    assert "action=accounting-start open=" in daemon.stderr()
    assert [int(f["seq"]) for f in found] == list(range(1, BURST + 1))
    assert {f["outcome"] for f in found} == {"delivered"}
    # The SASL users of the generator: every third message (tests/../bench/messagelog.py).
    assert sum(1 for f in found if f["auth_id"]) == len(range(0, BURST, 3))
    st = daemon.req(cmd="status")["accounting"]
    assert st["open"] == 0 and st["unwritten"] == 0


def test_kill_9_on_a_shared_store_each_node_exactly_once(tmp_path: Path) -> None:
    """The same on PostgreSQL, with a second node accounting its own messages into the same
    tables meanwhile: both number from 1, neither loses or repeats one, and `messages` lists
    both nodes' records with the node."""
    from pgserver import postgres_server

    with postgres_server() as pg:
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(DaemonProc(tmp_path / name, {
                "accounting": {"enabled": True, "stats_log": str(tmp_path / name / "stats.log")},
                "store": {"url": pg.url(), "node": name}}))
        a, b = nodes
        try:
            b.start()
            b.append(*generate_lines(300, seed=6))
            kill_9_in_a_burst(a, tmp_path / "a" / "stats.log")
            wait_for(lambda: len(stats_lines(tmp_path / "b" / "stats.log")) >= 300,
                     what="node b's 300 records")
            assert [int(f["seq"]) for f in stats_lines(tmp_path / "b" / "stats.log")] == \
                list(range(1, 301))
            listed = json.loads(b.ctl("messages", "--limit", "100000", "--json").stdout)
            assert {m["node"] for m in listed} == {"a", "b"}
            # (Node a's old records may be pruned already: the generator's times are past keep.)
            by_b = [m["queue_id"] for m in listed if m["node"] == "b"]
            assert len(by_b) == len(set(by_b)) == 300
            assert "NODE" in b.ctl("messages", "--limit", "3").stdout
        finally:
            for d in nodes:
                if d.proc and d.proc.poll() is None:
                    d.stop(signal.SIGKILL)


def test_messages_command_and_its_filters(daemon: DaemonProc) -> None:
    daemon.start()
    daemon.append(*generate_lines(30, seed=2))
    wait_for(lambda: daemon.req(cmd="status")["accounting"]["written_seq"] == 30,
             what="30 records")
    all_of = json.loads(daemon.ctl("messages", "--json").stdout)
    assert len(all_of) == 30 and all_of[0]["seq"] == 30           # the newest first
    alice = json.loads(daemon.ctl("messages", "--user", "alice", "--json").stdout)
    assert alice and {m["sasl_user"] for m in alice} == {"alice"}
    ip = all_of[5]["client_ip"]
    by_ip = json.loads(daemon.ctl("messages", "--ip", ip, "--json").stdout)
    assert by_ip and {m["client_ip"] for m in by_ip} == {ip}
    assert json.loads(daemon.ctl("messages", "--limit", "3", "--json").stdout)[0]["seq"] == 30
    text = daemon.ctl("messages", "--user", "alice").stdout
    assert "AUTH ID" in text and "alice" in text and "message(s)" in text
    bad = daemon.ctl("messages", "--ip", "not-an-ip")
    assert bad.returncode == 1 and "not an IP address" in bad.stderr


def test_messages_command_when_accounting_is_off(tmp_path: Path) -> None:
    d = DaemonProc(tmp_path)
    try:
        d.start()
        r = d.ctl("messages")
        assert r.returncode == 1 and "accounting is off" in r.stderr
    finally:
        d.stop()


def test_a_rotated_stats_log_is_followed_and_sighup_reloads(daemon: DaemonProc,
                                                           tmp_path: Path) -> None:
    stats = tmp_path / "stats.log"
    daemon.start()
    lines = list(generate_lines(20, seed=7))
    daemon.append(*lines[:80])
    wait_for(lambda: stats_lines(stats), what="the first records")
    stats.rename(tmp_path / "stats.log.1")           # logrotate's "create" way
    mark = len(daemon.stderr())
    daemon.send(signal.SIGHUP)
    daemon.wait_log("action=reload result=ok", after=mark)
    daemon.append(*lines[80:])
    wait_for(lambda: daemon.req(cmd="status")["accounting"]["written_seq"] == 20,
             what="20 records")
    old, new = stats_lines(tmp_path / "stats.log.1"), stats_lines(stats)
    assert old and new
    assert sorted(int(f["seq"]) for f in old + new) == list(range(1, 21))
