"""PendingWrites: failed commits merged so that one retry leaves the store as if none failed."""

from __future__ import annotations

from pathlib import Path

from logwatch.engine.model import Ban, Grant
from logwatch.state.pending import PendingWrites
from logwatch.state.store import Store


def grant(ip: str, expires: float = 100.0) -> Grant:
    return Grant(ip, "u", "imap", 1.0, expires)


def ban(net: str) -> Ban:
    return Ban(net, 1.0, 500.0, 5.0, {"user-unknown": 5})


def test_merged_batches_equal_the_batches_applied_in_order(tmp_path: Path) -> None:
    batches = [
        ({"192.0.2.1": grant("192.0.2.1"), "192.0.2.2": grant("192.0.2.2")}, {},
         {"203.0.113.1/32": ban("203.0.113.1/32")}, {}),
        ({}, {"192.0.2.1": "revoked"}, {}, {"203.0.113.1/32": "unban", "198.51.100.9/32": "x"}),
        ({"192.0.2.1": grant("192.0.2.1", 200.0)}, {"192.0.2.2": "expired"},
         {"203.0.113.1/32": ban("203.0.113.1/32"), "203.0.113.2/32": ban("203.0.113.2/32")}, {}),
    ]
    direct = Store(tmp_path / "direct.db")
    merged = Store(tmp_path / "merged.db")
    for store in (direct, merged):           # what was durable before the disk filled
        store.put_grants([grant("192.0.2.2"), grant("192.0.2.3")])
        store.put_bans([ban("198.51.100.9/32")])
    pending = PendingWrites()
    assert not pending
    for grants, revoked, bans, lifted in batches:
        with direct.transaction():
            direct.delete_grants(revoked)
            direct.put_grants(grants.values())
            direct.delete_bans(lifted)
            direct.put_bans(bans.values())
        pending.merge(grants, revoked, bans, lifted)
    assert pending
    with merged.transaction():
        pending.write(merged, lambda nets: [(n, 1, 1.0) for n in nets])
    assert merged.load_grants() == direct.load_grants()
    assert merged.load_bans() == direct.load_bans()
    assert [g.ip for g in merged.load_grants()] == ["192.0.2.1", "192.0.2.3"]
    assert merged.load_grants()[0].expires_at == 200.0
    assert sorted(r[0] for r in merged.load_offenders()) == ["203.0.113.1/32", "203.0.113.2/32"]


def test_cursor_given_while_held_is_written_on_release(tmp_path: Path) -> None:
    # The journal source hands each cursor over once; one given while a commit failed must
    # still reach the store with the resync, or a restart would replay those records.
    store = Store(tmp_path / "state.db")
    store.set_cursor("journal", "c1")
    store.positions_held = True
    store.set_cursor("journal", "c2")
    store.save_positions([])
    assert store.get_cursor("journal") == "c1"
    store.positions_held = False
    with store.transaction():
        store.write_held_cursors()
    assert store.get_cursor("journal") == "c2"
    store.close()
