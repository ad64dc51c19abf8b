"""Store.fresh: which stores the daemon must not reconcile the kernel and the map down to."""

from __future__ import annotations

from pathlib import Path

from logwatch.engine.model import Ban
from logwatch.state.store import Store


def reopen(path: Path) -> bool:
    store = Store(path)
    try:
        return store.fresh
    finally:
        store.close()


def test_fresh_until_a_daemon_started_on_it(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert reopen(db)                       # missing
    assert reopen(db)                       # schema only: the first start died early
    store = Store(db)
    store.mark_started()
    store.close()
    assert not reopen(db)                   # an empty store a daemon used: the truth
    db.write_bytes(b"")
    assert reopen(db)                       # 0 bytes again


def test_a_store_with_data_is_never_fresh(tmp_path: Path) -> None:
    # A store written by a version without the mark is taken as it is (no adoption).
    db = tmp_path / "state.db"
    store = Store(db)
    store.put_bans([Ban("192.0.2.7/32", 0.0, None)])
    store.close()
    assert not reopen(db)
