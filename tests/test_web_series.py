"""The status page's time series (logwatch/state/series.py) in a real SQLite store (the shared
counts over time, state/counts.py): what the recorder adds once a minute, reading spans from
minute and hour buckets, the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from logwatch.daemon.loop import Loop
from logwatch.state import series
from logwatch.state.store import Store

T0 = 1_800_000_000 - 1_800_000_000 % 3600     # an hour boundary


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def test_increases_of_cumulative_counters() -> None:
    assert series.increases({"a": 5, "b": 2}, {"a": 7, "b": 2, "c": 1}) == {"a": 2, "c": 1}
    assert series.increases({"a": 5}, {"a": 3}) == {"a": 3}      # restarted: counted anew


def test_rows_are_minute_rows() -> None:
    assert series.rows({"bans": 2}, T0 + 3599.5) == [("bans", T0 + 3540, 2)]


def test_the_store_adds_up_and_reads_spans_with_zeros_between(store: Any) -> None:
    store.put_counts(series.rows({"bans": 1, "events.login": 4}, T0 + 30))
    store.put_counts(series.rows({"bans": 2}, T0 + 50))          # same minute: added
    store.put_counts(series.rows({"bans": 5}, T0 + 600))
    hour = series.read(store, ["bans", "grants"], "hour", T0 + 900)
    assert hour["step"] == 60 and hour["points"] == 60
    bans = hour["series"]["bans"]
    start = hour["start"]
    assert bans[(T0 - start) // 60] == 3 and bans[(T0 + 600 - start) // 60] == 5
    assert sum(bans) == 8 and hour["series"]["grants"] == [0.0] * 60
    day = series.read(store, ["bans"], "day", T0 + 900)          # 5-minute points
    assert day["step"] == 300 and sum(day["series"]["bans"]) == 8
    month = series.read(store, ["bans"], "month", T0 + 900)      # from the hour buckets
    assert month["step"] == 6 * 3600 and sum(month["series"]["bans"]) == 8
    assert series.names(store, "events.") == ["events.login"]


def test_a_month_reads_the_hours_a_day_after_the_minutes_are_gone(store: Any) -> None:
    store.put_counts(series.rows({"bans": 1}, T0))
    later = T0 + 2 * 86400
    store.put_counts(series.rows({"grants": 1}, later), later)      # prunes old minutes
    assert sum(series.read(store, ["bans"], "day", later)["series"]["bans"]) == 0
    assert sum(series.read(store, ["bans"], "month", later)["series"]["bans"]) == 1


def test_the_recorder_samples_on_its_timer_and_flushes_at_stop(store: Any, clock: Any) -> None:
    clock.now = float(T0 + 10)
    counters = {"events": {"login": 1}, "actions": {"ban": 0}}
    errors: list[str] = []
    loop = Loop(clock)
    rec = series.SeriesRecorder(lambda: store, lambda: counters, loop, errors.append)
    rec.schedule(clock.now)
    assert loop.timers["series"] == T0 + 60
    counters["events"]["login"] = 4
    counters["actions"]["ban"] = 2
    clock.now = float(T0 + 60)
    loop.run_timers(clock.now)
    got = series.read(store, ["events.login", "bans"], "hour", clock.now)["series"]
    assert sum(got["events.login"]) == 3 and sum(got["bans"]) == 2
    assert loop.timers["series"] == T0 + 120
    counters["actions"]["ban"] = 3
    rec.flush(T0 + 70)
    assert sum(series.read(store, ["bans"], "hour", T0 + 70)["series"]["bans"]) == 3
    store.close()
    rec.flush(T0 + 80)          # a store that fails: one error, no exception
    counters["actions"]["ban"] = 4
    rec.flush(T0 + 90)
    assert errors and all(e.startswith("series: ") for e in errors)


def test_the_largest_series_of_a_prefix_in_one_query(store: Any) -> None:
    """Accounting's top senders ("sender:ID"), summed over the span."""
    store.put_counts([("sender:alice", T0, 3.0), ("sender:bob", T0 + 60, 5.0),
                      ("sender:alice", T0 + 120, 4.0), ("sent", T0, 9.0),
                      ("sender:carol", T0 - 7200, 50.0)])      # before the last hour
    got = series.answer(store, {"span": "hour", "top": "sender:", "limit": 2}, T0 + 600)
    assert got["top"] == [["sender:alice", 7.0], ["sender:bob", 5.0]]
    day = series.answer(store, {"span": "day", "top": "sender:"}, T0 + 600)["top"]
    assert day[0] == ["sender:carol", 50.0] and len(day) == 3
    assert not series.answer(store, {"top": "sender:", "limit": 0}, T0)["ok"]
    assert not series.answer(store, {"top": "sender:%"}, T0)["ok"]


def test_the_series_command_checks_its_request(store: Any) -> None:
    assert not series.answer(store, {"span": "year", "names": []}, T0)["ok"]
    assert not series.answer(store, {"span": "hour", "names": "bans"}, T0)["ok"]
    assert series.answer(store, {"span": "hour", "prefix": "x."}, T0)["series"] == {}
    many = [f"s{i}" for i in range(80)]
    assert len(series.answer(store, {"names": many}, T0)["series"]) == 50
