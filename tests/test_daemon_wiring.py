"""The daemon's wiring (issue 13): a Daemon built from fakes, the one effect table, the
command table, the services registry, the loop and its injected clock."""

from __future__ import annotations

import argparse
import contextlib
import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import logwatch.services
from logwatch.daemon.app import Daemon
from logwatch.daemon.config import Config
from logwatch.daemon.effects import EFFECTS
from logwatch.daemon.factory import Parts
from logwatch.daemon.loop import Loop
from logwatch.engine.model import Ban, BanAdded, BanLifted, Effect, Grant, GrantAdded, GrantRevoked
from logwatch.registry import Registry
from logwatch.services import SERVICES, ServiceEntry, ServiceError, start_services
from logwatch.services.commands import Actions, Commands

NOW = 1_700_000_000.0


@dataclass
class FakeClock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Records every write; fail=True makes the next commits raise (a full disk)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.fail = False
        self.positions_held = False
        self.held_cursors: dict[str, str] = {}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self.fail:
            raise OSError(28, "No space left on device")
        yield

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("put_", "delete_")):
            return lambda rows: self.writes.append((name, sorted(
                getattr(r, "ip", None) or getattr(r, "net", None) or r[0] if not isinstance(r, str)
                else r for r in rows)))
        raise AttributeError(name)

    def write_held_cursors(self) -> None:
        pass


class FakeEngine:
    """handle() answers with the effects queued for the event's ip."""

    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.bans: dict[str, Ban] = {}
        self.queued: dict[str, list[Effect]] = {}

    def handle(self, event: Any) -> list[Effect]:
        return self.queued.pop(event.ip, [])

    def offender_rows(self, nets: Any = None) -> list[tuple[str, int, float]]:
        return [(n, 1, 5.0) for n in nets or ()]

    def next_deadline(self) -> float | None:
        return None

    def verdict(self, ip: str) -> dict[str, Any]:
        return {"ip": ip, "banned": ip in self.bans}


class Recorder:
    """A firewall and a relay map at once: records the calls in order."""

    backend = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def ban(self, bans: list[Ban]) -> None:
        self.calls.append(("ban", [b.net for b in bans]))

    def unban(self, nets: list[str]) -> None:
        self.calls.append(("unban", list(nets)))

    def add(self, ips: list[str]) -> None:
        self.calls.append(("add", list(ips)))

    def remove(self, ips: list[str]) -> None:
        self.calls.append(("remove", list(ips)))


class Event(typing.NamedTuple):
    ip: str
    kind: str = "rejected"
    time: Any = None


class FakeParser:
    def parse(self, chunk: bytes) -> list[Event]:
        return [Event(line.decode()) for line in chunk.splitlines()]


def grant(ip: str) -> Grant:
    return Grant(ip, user="u", service="imap", granted_at=NOW, expires_at=NOW + 60)


def ban(net: str) -> Ban:
    return Ban(net, since=NOW, expires_at=NOW + 60)


@pytest.fixture
def wired() -> Iterator[tuple[Daemon, Parts, Recorder, Recorder, FakeClock]]:
    cfg = Config()
    cfg.daemon.actions_log = None
    fw, rmap, clock = Recorder(), Recorder(), FakeClock()
    parts = Parts(store=FakeStore(), engine=FakeEngine(), parser=FakeParser(), firewall=fw,
                  relay_map=rmap)
    yield Daemon(cfg, None, argparse.Namespace(), clock=clock, parts=parts), parts, fw, rmap, clock


def test_a_daemon_built_from_fakes_runs_a_chunk_through_the_effect_table(wired) -> None:
    d, parts, fw, rmap, _ = wired
    parts.engine.queued = {"198.51.100.7": [BanAdded(ban("198.51.100.7/32"))],
                           "192.0.2.1": [GrantAdded(grant("192.0.2.1"))]}
    d.on_chunk("files", b"198.51.100.7\n192.0.2.1\n")
    assert fw.calls == [("ban", ["198.51.100.7/32"])]
    assert rmap.calls == [("add", ["192.0.2.1"])]
    assert parts.store.writes == [("put_grants", ["192.0.2.1"]),
                                  ("put_bans", ["198.51.100.7/32"]),
                                  ("put_offenders", ["198.51.100.7/32"])]
    assert d.status is not None and d.counters.actions == {"ban": 1, "grant": 1}


def test_every_effect_type_has_one_entry_in_the_table() -> None:
    assert set(EFFECTS) == set(typing.get_args(Effect))


def test_removals_reach_the_effectors_before_additions(wired) -> None:
    d, parts, fw, rmap, _ = wired
    d.apply([BanAdded(ban("198.51.100.8/32")), BanLifted("198.51.100.9/32", "unban"),
             GrantAdded(grant("192.0.2.2")), GrantRevoked("192.0.2.3", "revoked"),
             GrantAdded(grant("192.0.2.4"), refreshed=True)])
    assert fw.calls == [("unban", ["198.51.100.9/32"]), ("ban", ["198.51.100.8/32"])]
    assert rmap.calls == [("remove", ["192.0.2.3"]), ("add", ["192.0.2.2"])]   # no refresh


def test_the_last_effect_of_a_key_wins_within_a_batch(wired) -> None:
    d, parts, fw, _, _ = wired
    d.apply([BanAdded(ban("198.51.100.8/32")), BanLifted("198.51.100.8/32", "unban")])
    assert fw.calls == [("unban", ["198.51.100.8/32"])]
    assert parts.store.writes == [("delete_bans", ["198.51.100.8/32"])]


def test_a_failed_commit_holds_the_batch_until_the_resync(wired) -> None:
    d, parts, fw, _, clock = wired
    parts.store.fail = True
    d.apply([BanAdded(ban("198.51.100.8/32"))])
    assert fw.calls == [("ban", ["198.51.100.8/32"])]     # the kernel first, as always
    assert parts.store.positions_held and d.effects.store_dirty
    assert d.loop.armed("storesync")
    d.apply([BanAdded(ban("198.51.100.9/32"))])          # merged, not written
    assert parts.store.writes == []
    parts.store.fail = False
    clock.now += 10
    d.loop.run_timers(clock.now)
    assert not d.effects.store_dirty and not parts.store.positions_held
    assert ("put_bans", ["198.51.100.8/32", "198.51.100.9/32"]) in parts.store.writes


def test_commands_go_through_one_table_and_answer_from_engine_queries(wired) -> None:
    d, parts, fw, _, _ = wired
    applied: list[Any] = []
    engine = FakeEngine()
    engine.bans["198.51.100.7/32"] = ban("198.51.100.7/32")
    commands = Commands(engine, Actions(status=lambda: {"x": 1}, apply=applied.extend,
                                        reload=lambda: (True, "reloaded")))
    assert set(commands.table) == {"status", "bans", "grants", "reload", "flush", "offenders",
                                   "check", "ban", "unban", "grant", "revoke",
                                   "accounts", "suspend", "unsuspend", "verdicts",
                                   "policy-test", "messages",
                                   "table", "series"}
    assert commands({"cmd": "status"}) == {"ok": True, "x": 1}
    assert commands({"cmd": "check", "ip": "198.51.100.7/32"})["banned"] is True
    assert commands({"cmd": "nope"}) == {"ok": False, "error": "unknown command 'nope'"}
    assert d.handle_request({"cmd": "bans"}) == {"ok": True, "bans": []}


def test_the_control_socket_is_the_first_registered_service() -> None:
    assert SERVICES.names()[0] == "control"


class DummyService:
    name = "dummy"

    def __init__(self, fail: bool) -> None:
        self.fail, self.started, self.closed = fail, False, False

    def start(self) -> None:
        if self.fail:
            raise OSError("address in use")
        self.started = True

    def next_deadline(self) -> float | None:
        return None

    def expire_idle(self, now: float | None = None) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def test_a_registered_service_is_started_and_a_failing_one_stops_the_start(monkeypatch) -> None:
    built: list[DummyService] = []

    def entry(name: str, fail: bool) -> ServiceEntry:
        def build(cfg: Any, handler: Any, selector: Any, clock: Any) -> DummyService:
            built.append(DummyService(fail))
            return built[-1]
        return ServiceEntry(name, lambda cfg: True, build, lambda cfg: "/run/x/dummy.sock",
                            "dummy.listen")

    reg: Registry[ServiceEntry] = Registry("service")
    reg.register("one", entry("one", False))
    monkeypatch.setattr(logwatch.services, "SERVICES", reg)
    started = start_services(Config(), lambda req: {}, None, FakeClock())
    assert started == built and built[0].started
    reg.register("two", entry("two", True))
    with pytest.raises(ServiceError, match="^two socket: address in use"):
        start_services(Config(), lambda req: {}, None, FakeClock())
    assert built[1].started and built[1].closed     # the ones already started are closed


def test_the_loop_runs_due_timers_and_ready_fds() -> None:
    clock = FakeClock()
    loop = Loop(clock)
    ran: list[str] = []
    loop.on_timer("soon", lambda now: (ran.append("soon"), loop.cancel("soon")))
    loop.on_timer("later", lambda now: ran.append("later"))
    loop.call_at("soon", NOW - 1)
    loop.call_at("later", NOW + 100)
    loop.run_timers(clock())
    assert ran == ["soon"] and not loop.armed("soon") and loop.armed("later")
    r, w = os.pipe()
    try:
        loop.register(r, lambda mask: ran.append("fd"))
        os.write(w, b"x")
        loop.turn([lambda: ran.append("busy")])
        assert ran[1:] == ["fd", "busy"]
        loop.unregister(r)
        loop.unregister(r)          # twice is no error
    finally:
        os.close(r)
        os.close(w)
        loop.selector.close()


def test_the_daemon_takes_its_time_from_the_injected_clock(wired) -> None:
    d, parts, fw, _, clock = wired
    d.error("something")
    assert d.counters.started == NOW and d.counters.errors[-1]["time"] == NOW
    clock.now += 5
    d.effects.guarded("firewall", lambda: 1 / 0)
    assert d.counters.errors[-1]["time"] == NOW + 5
    assert d.loop.timers["repair"] == NOW + 5 + d.upkeep.repair_delay
