"""The store's account tables: suspensions, their history and the account windows survive a
reopen (restart); counts over time in minute and hour buckets, pruned, and the read query."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from logwatch.engine.accounts import AccountBook, RiskSettings
from logwatch.engine.model import Suspension
from logwatch.state.store import SCHEMA_VERSION, Store


@dataclass
class Rcpt:
    address: str
    status: str = "sent"
    dsn: str = "2.0.0"


@dataclass
class Rec:
    sasl_user: str
    client_ip: str
    recipients: tuple
    done_time: float


def test_suspensions_and_windows_survive_a_restart(tmp_path, clock) -> None:
    path = tmp_path / "state.db"
    book = AccountBook(RiskSettings(), clock)
    (add,) = book.message(Rec("Eve", "192.0.2.9", tuple(Rcpt(f"x{i}@a.example")
                                                         for i in range(250)), clock.now))
    book.message(Rec("frank", "192.0.2.10", (Rcpt("y@b.example"),), clock.now))
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    with store.transaction():
        store.put_suspensions([add.suspension])
        store.put_suspension_history(book.history_rows())
        store.put_account_windows(book.account_rows(dirty=True))
    store.close()

    store = Store(path)
    again = AccountBook(RiskSettings(), clock)
    effects = again.load(store.load_suspensions(), store.load_suspension_history(),
                         store.load_account_windows())
    assert effects == []
    assert again.suspensions == {"eve": add.suspension}
    assert again.view()["accounts"][0]["user"] == "frank"
    clock.advance(3600)
    lifted = again.sweep()
    assert [e.user for e in lifted] == ["eve"]
    store.delete_suspensions(["eve"])
    assert store.load_suspensions() == []
    # The second suspension of eve grows: the history came back from the store.
    (second,) = again.message(Rec("eve", "192.0.2.9", tuple(
        Rcpt(f"x{i}@a.example") for i in range(250)), clock.now))
    assert second.suspension.offences == 2
    assert second.suspension.expires_at - second.suspension.since == 7200
    store.replace_suspensions([second.suspension, Suspension("zed", 1.0, 2.0)])
    assert [s.user for s in store.load_suspensions()] == ["eve", "zed"]
    store.put_account_windows([], older_than=clock.now + 86400)
    assert store.load_account_windows() == []
    store.close()


def test_counts_minutes_hours_prune_and_query(tmp_path) -> None:
    store = Store(tmp_path / "state.db")
    day = 86400 * 20000                     # a day boundary, far from 1970
    rows = [("sent", day + m * 60, 1.0) for m in range(180)]     # 3 hours, 1 a minute
    rows += [("sent", day + 61, 2.0)]                                # same minute again
    store.put_counts(rows)
    assert store.counts("sent", day, day + 180, 60) == [(day, 1.0), (day + 60, 3.0),
                                                       (day + 120, 1.0)]
    # 5-minute steps from minute buckets; hour steps from hour buckets.
    assert store.counts("sent", day, day + 600, 300) == [(day, 7.0), (day + 300, 5.0)]
    assert store.counts("sent", day, day + 4 * 3600, 3600) == [
        (day, 62.0), (day + 3600, 60.0), (day + 7200, 60.0), (day + 10800, 0.0)]
    # Older than a day: minutes are gone, hours answer (any step is rounded to hours).
    now = day + 2 * 86400
    store.put_counts([("sent", now, 1.0)], now=now)
    assert store.counts("sent", day, day + 7200, 60, now=now) == [(day, 62.0),
                                                                  (day + 3600, 60.0)]
    assert store.db.execute("SELECT COUNT(*) FROM counts WHERE step = 60 AND t < ?",
                            (now - 86400,)).fetchone()[0] == 0
    assert store.count_series() == ["sent"] and store.count_series("sender:") == []
    store.put_counts([], now=day + 40 * 86400)
    assert store.counts("sent", day, day + 3600, 3600) == [(day, 0.0)]
    assert store.count_series() == []
    assert store.counts("sent", day, day, 60) == []
    with pytest.raises(ValueError):
        store.counts("sent", 0, 10**9, 60)
    store.close()
