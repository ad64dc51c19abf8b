"""daemon/accounting.py with a real store and stats log, no daemon: subscribers (a failing one
changes nothing), stage/committed/aborted, a stats log that cannot be written (kept and
retried), the retention of records, and a restart writing what the stats log lacks."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import FakeClock

from logwatch.daemon.accounting import Accounting, Subscriber
from logwatch.daemon.config import AccountingConfig
from logwatch.daemon.statslog import parse_line
from logwatch.parsing.rules import load_ruleset
from logwatch.state import accounting as rows
from logwatch.state.store import Store

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from messagelog import generate  # noqa: E402

RULESET = load_ruleset([REPO / "rules"], probes=False)
NOW = 1795305600.0


def make(tmp_path: Path, clock: FakeClock, stats: Path | None = None) -> Accounting:
    cfg = AccountingConfig(enabled=True, stats_log=str(stats or tmp_path / "stats.log"))
    acc = Accounting(cfg, RULESET, Store(tmp_path / "state.db"), clock)
    acc.start()
    return acc


def commit(acc: Accounting) -> None:
    with acc.store.transaction():
        acc.stage(acc.store)
    acc.committed()


def seqs(path: Path) -> list[int]:
    return [int(dict(parse_line(x))["seq"]) for x in path.read_text().splitlines()]


def test_subscribers_get_records_and_rejects_and_a_failing_one_changes_nothing(
        tmp_path: Path, clock: FakeClock) -> None:
    clock.now = NOW
    acc = make(tmp_path, clock)
    got, rejected = [], []

    def broken(_record: object) -> None:
        raise RuntimeError("consumer bug")

    acc.subscribe(Subscriber(on_record=broken, name="broken"))
    acc.subscribe(Subscriber(on_record=got.append, on_reject=rejected.append, name="ok"))
    acc.on_chunk(generate(10, seed=4) + (
        b"Nov 21 10:00:00 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: "
        b"554 5.7.1 <x@y.example>: Relay access denied; from=<a@b.example> to=<x@y.example> "
        b"proto=ESMTP helo=<h>\n"))
    assert len(got) == 10 and [r.client_ip for r in rejected] == ["192.0.2.9"]
    assert acc.errors == 10 and len(acc.pending) == 10
    commit(acc)
    assert seqs(tmp_path / "stats.log") == list(range(1, 11))


def test_nothing_reaches_the_stats_log_before_the_commit(tmp_path: Path,
                                                         clock: FakeClock) -> None:
    clock.now = NOW
    acc = make(tmp_path, clock)
    acc.on_chunk(generate(5, seed=4))
    assert not (tmp_path / "stats.log").exists()
    with acc.store.transaction():
        acc.stage(acc.store)
    acc.aborted()                          # the transaction failed: all stays pending
    assert len(acc.pending) == 5 and not (tmp_path / "stats.log").exists()
    commit(acc)
    assert seqs(tmp_path / "stats.log") == [1, 2, 3, 4, 5]


def test_an_unwritable_stats_log_keeps_the_records_for_a_retry(tmp_path: Path,
                                                               clock: FakeClock) -> None:
    clock.now = NOW
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    acc = make(tmp_path, clock, stats=blocker / "stats.log")
    acc.on_chunk(generate(3, seed=4))
    commit(acc)
    assert len(acc.unwritten) == 3 and acc.written_seq == 0
    blocker.unlink()
    blocker.mkdir()
    acc.flush()                            # the "accounting" timer's retry
    assert seqs(blocker / "stats.log") == [1, 2, 3] and acc.unwritten == []


def test_restart_writes_what_the_stats_log_lacks_and_keeps_open_messages(
        tmp_path: Path, clock: FakeClock) -> None:
    clock.now = NOW
    acc = make(tmp_path, clock)
    data = generate(40, seed=6).split(b"\n")
    acc.on_chunk(b"\n".join(data[:150]) + b"\n")
    with acc.store.transaction():          # committed, then "killed" before the write
        acc.stage(acc.store)
    done, still_open = len(acc.pending), len(acc.correlator.open)
    assert done and still_open
    acc.store.close()
    again = make(tmp_path, clock)          # start(): the records go to the stats log
    assert seqs(tmp_path / "stats.log") == list(range(1, done + 1))
    assert len(again.correlator.open) == still_open
    again.on_chunk(b"\n".join(data[150:]))
    commit(again)
    assert seqs(tmp_path / "stats.log") == list(range(1, 41))
    found = [dict(parse_line(x))["queue_id"] for x in (tmp_path / "stats.log").read_text()
             .splitlines()]
    assert len(set(found)) == 40


def test_records_are_kept_for_keep_then_pruned_once_written(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    clock.now = NOW
    acc = make(tmp_path, clock)
    acc.on_chunk(generate(4, seed=4))
    commit(acc)
    assert len(rows.query(acc.store)) == 4
    assert {node for node, _ in rows.query(acc.store)} == {""}
    assert acc.query({"user": "alice"})["messages"][0]["sasl_user"] == "alice"
    clock.now = NOW + 30 * 86400          # past accounting.keep (7 days) and the hour
    commit(acc)
    assert rows.query(acc.store) == []


def test_query_refuses_bad_arguments(tmp_path: Path, clock: FakeClock) -> None:
    acc = make(tmp_path, clock)
    assert not acc.query({"ip": "nope"})["ok"]
    assert not acc.query({"since": "forever"})["ok"]
    assert not acc.query({"limit": 0})["ok"]
    assert acc.query({"ip": "::ffff:192.0.2.1", "since": "1h"}) == {"ok": True, "messages": []}


def test_a_new_state_database_continues_the_stats_logs_numbers(tmp_path: Path,
                                                               clock: FakeClock) -> None:
    clock.now = NOW
    acc = make(tmp_path, clock)
    acc.on_chunk(generate(3, seed=4))
    commit(acc)
    acc.store.close()
    (tmp_path / "state.db").unlink()
    again = make(tmp_path, clock)
    again.on_chunk(generate(2, seed=5))
    commit(again)
    assert seqs(tmp_path / "stats.log") == [1, 2, 3, 4, 5]
