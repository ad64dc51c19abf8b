"""The engine's effects applied: ONE table maps each effect type to how it folds into a
batch, its effector call, its store write and its action-log line.

Durability order: a batch goes to the effectors, then to the store in one transaction (with the
sources' positions when asked), then to the logs. A failed commit holds the batch as pending
writes and holds the positions back until a resync succeeds (a restart then re-reads the lines
whose effects are not durable yet)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from logwatch.daemon.factory import Parts
from logwatch.daemon.logbatch import held
from logwatch.engine.model import (
    Ban,
    BanAdded,
    BanLifted,
    Effect,
    Grant,
    GrantAdded,
    GrantRevoked,
    Suspension,
    SuspensionAdded,
    SuspensionLifted,
)
from logwatch.services.commands import reason_text
from logwatch.state.pending import PendingWrites

log = logging.getLogger("logwatchd.daemon")

STORE_RETRY_DELAY = 1.0          # resync of the store after a failed commit (disk full) ...
STORE_RETRY_MAX_DELAY = 30.0     # ... doubling while it keeps failing, up to this



@dataclass
class Batch:
    """One batch of effects, folded: the last effect of each key wins."""

    grants: dict[str, Grant] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)
    new_map: list[str] = field(default_factory=list)   # grants the map does not hold yet
    bans: dict[str, Ban] = field(default_factory=dict)
    lifted: dict[str, str] = field(default_factory=dict)
    suspended: dict[str, Suspension] = field(default_factory=dict)
    unsuspended: dict[str, str] = field(default_factory=dict)


# -- fold ------------------------------------------------------------------------------------

def _fold_grant(b: Batch, e: GrantAdded) -> None:
    b.grants[e.grant.ip] = e.grant
    b.revoked.pop(e.grant.ip, None)
    if not e.refreshed:
        b.new_map.append(e.grant.ip)


def _fold_revoke(b: Batch, e: GrantRevoked) -> None:
    b.revoked[e.ip] = e.why
    b.grants.pop(e.ip, None)


def _fold_ban(b: Batch, e: BanAdded) -> None:
    b.bans[e.ban.net] = e.ban
    b.lifted.pop(e.ban.net, None)


def _fold_lift(b: Batch, e: BanLifted) -> None:
    b.lifted[e.net] = e.why
    b.bans.pop(e.net, None)


def _fold_suspend(b: Batch, e: SuspensionAdded) -> None:
    b.suspended[e.suspension.user] = e.suspension
    b.unsuspended.pop(e.suspension.user, None)


def _fold_unsuspend(b: Batch, e: SuspensionLifted) -> None:
    b.unsuspended[e.user] = e.why
    b.suspended.pop(e.user, None)


# -- store writes (inside the batch's transaction) -------------------------------------------

def _put_offenders(p: Parts, b: Batch) -> None:
    if b.bans:
        # Only the batch's nets: the whole history may hold 1M offenders.
        p.store.put_offenders(p.engine.offender_rows(list(b.bans)))


def _put_suspension_history(p: Parts, b: Batch) -> None:
    if b.suspended:
        p.store.put_suspension_history(p.engine.accounts.history_rows(list(b.suspended)))


# -- log lines -------------------------------------------------------------------------------

def _log_grants(out: Recorder, b: Batch, now: float) -> None:
    fresh = set(b.new_map)
    for ip, g in b.grants.items():
        action = "grant" if ip in fresh else "refresh"
        out.counts[action] += 1
        if action == "grant":
            log.info("action=grant ip=%s user=%s service=%s expires=%d%s",
                     ip, g.user, g.service, g.expires_at, out.dry)
        out.actions().write(action, now, ip=ip, user=g.user, service=g.service,
                            expires=int(g.expires_at))


def _log_revokes(out: Recorder, b: Batch, now: float) -> None:
    for ip, why in b.revoked.items():
        out.counts["revoke"] += 1
        log.info("action=revoke ip=%s why=%s%s", ip, why, out.dry)
        out.actions().write("revoke", now, ip=ip, reason=why)


def _log_bans(out: Recorder, b: Batch, now: float) -> None:
    for net, ban in b.bans.items():
        out.counts["ban"] += 1
        duration = "permanent" if ban.expires_at is None else f"{ban.expires_at - ban.since:.0f}"
        reason = reason_text(ban.reason) or ban.source
        if "prefix-fallback" in ban.reason:
            # The offender network holds a protected address: say so, never silently.
            log.warning("action=ban-prefix-fallback ip=%s configured_prefix=/%s "
                        "why=protected-address-in-prefix", net, ban.reason["prefix-fallback"])
        log.info("action=ban ip=%s reason=%s score=%g duration=%s offences=%d source=%s%s",
                 net, reason, ban.score, duration, ban.offences, ban.source, out.dry)
        out.actions().write("ban", now, ip=net, reason=reason, score=f"{ban.score:g}",
                            duration=duration, offences=ban.offences, source=ban.source)
        if out.bans is not None:
            out.bans.add(ban)


def _log_lifts(out: Recorder, b: Batch, now: float) -> None:
    for net, why in b.lifted.items():
        out.counts["unban"] += 1
        log.info("action=unban ip=%s why=%s%s", net, why, out.dry)
        out.actions().write("unban", now, ip=net, reason=why)
        if out.bans is not None:
            out.bans.lift(net)


def _log_suspends(out: Recorder, b: Batch, now: float) -> None:
    for user, s in b.suspended.items():
        out.counts["suspend"] += 1
        why = ",".join(f"{k}:{v:g}" for k, v in sorted(s.reason.items())) or s.source
        # The one alert line of a (possibly) compromised account: a warning, never only info.
        log.warning("action=suspend user=%s score=%g why=%s duration=%.0f offences=%d "
                    "source=%s table_action=%s%s", user, s.score, why, s.expires_at - s.since,
                    s.offences, s.source, out.suspend_action(), out.dry)
        out.actions().write("suspend", now, user=user, score=f"{s.score:g}", reason=why,
                            duration=f"{s.expires_at - s.since:.0f}", offences=s.offences,
                            source=s.source)


def _log_unsuspends(out: Recorder, b: Batch, now: float) -> None:
    for user, why in b.unsuspended.items():
        out.counts["unsuspend"] += 1
        log.info("action=unsuspend user=%s why=%s%s", user, why, out.dry)
        out.actions().write("unsuspend", now, user=user, reason=why)


@dataclass(frozen=True)
class EffectKind:
    """What one effect type does: how it folds into a batch, which effector method gets
    which of the batch's keys, which store method gets which rows, and its log lines."""

    fold: Callable[[Batch, Any], None]
    effector: str                           # the Parts field, and its name in errors
    method: str                             # called with call_args(batch) when not empty
    call_args: Callable[[Batch], list[Any]]
    store_method: str                       # called with store_rows(batch) when not empty
    store_rows: Callable[[Batch], Any]
    record: Callable[[Recorder, Batch, float], None]
    call_rank: int      # removals reach the effector before additions, as always


EFFECTS: dict[type, EffectKind] = {
    GrantAdded: EffectKind(_fold_grant, "relay_map", "add",
                           lambda b: [ip for ip in b.new_map if ip in b.grants],
                           "put_grants", lambda b: b.grants.values(), _log_grants, 1),
    GrantRevoked: EffectKind(_fold_revoke, "relay_map", "remove", lambda b: list(b.revoked),
                             "delete_grants", lambda b: b.revoked, _log_revokes, 0),
    BanAdded: EffectKind(_fold_ban, "firewall", "ban", lambda b: list(b.bans.values()),
                         "put_bans", lambda b: b.bans.values(), _log_bans, 3),
    BanLifted: EffectKind(_fold_lift, "firewall", "unban", lambda b: list(b.lifted),
                          "delete_bans", lambda b: b.lifted, _log_lifts, 2),
    SuspensionAdded: EffectKind(_fold_suspend, "suspension_table", "add",
                                lambda b: list(b.suspended.values()), "put_suspensions",
                                lambda b: b.suspended.values(), _log_suspends, 5),
    SuspensionLifted: EffectKind(_fold_unsuspend, "suspension_table", "remove",
                                 lambda b: list(b.unsuspended), "delete_suspensions",
                                 lambda b: b.unsuspended, _log_unsuspends, 4),
}
_BY_CALL = sorted(EFFECTS.values(), key=lambda k: k.call_rank)
_STORE_LAST = (_put_offenders, _put_suspension_history)     # after every kind's write, in the same transaction
_ERROR_NAME = {"relay_map": "relaymap", "firewall": "firewall",
               "suspension_table": "saslaccess"}


@dataclass
class Recorder:
    """Where a batch is told: the action counters and the actions log (swapped on reload)."""

    counts: Any
    actions: Callable[[], Any]
    dry_run: Callable[[], bool] = lambda: False
    suspend_action: Callable[[], str] = lambda: "HOLD"
    timing: Callable[[str, float], None] = lambda effector, seconds: None   # latency metrics
    bans: Any = None                # status.BanReasons: live bans by reason, for /metrics

    @property
    def dry(self) -> str:
        """The suffix of every action line of a dry run."""
        return " dry_run=1" if self.dry_run() else ""


class Effects:
    """Applies batches of effects in the durability order, and resyncs the store after a
    failed commit (on the loop's "storesync" timer, backing off while it fails)."""

    def __init__(self, parts: Parts, loop: Any, recorder: Recorder,
                 error: Callable[[str], None], effector_failed: Callable[[], None]) -> None:
        self.parts = parts
        self.loop = loop
        self.recorder = recorder
        self.error = error
        self.effector_failed = effector_failed
        # True while the store lags behind the engine (a commit failed): positions are then
        # not saved, so a restart re-reads the lines whose effects are not durable yet.
        self.store_dirty = False
        self.pending = PendingWrites()
        self.suspensions_held = False    # a held batch changed suspensions
        self.unsuspended_held: set[str] = set()   # and lifted these (a shared store's rows)
        self.retry_delay = STORE_RETRY_DELAY
        loop.on_timer("storesync", self._on_storesync)

    def apply(self, effects: Iterable[Effect], positions: bool = False) -> None:
        """Hand one batch to the effectors, then persist it in one transaction, then log it
        (its log lines leave together at the end: logbatch)."""
        effects = list(effects)
        if not effects:
            return
        with held():
            self._apply(effects, positions)

    def _apply(self, effects: list[Effect], positions: bool) -> None:
        now = self.loop.clock()
        batch = Batch()
        for eff in effects:
            EFFECTS[type(eff)].fold(batch, eff)
        for kind in _BY_CALL:
            target, args = getattr(self.parts, kind.effector, None), kind.call_args(batch)
            if target is not None and args:
                self.guarded(_ERROR_NAME[kind.effector], partial(getattr(target, kind.method),
                                                                 args))
        self.persist(batch, positions)
        for kind in EFFECTS.values():
            kind.record(self.recorder, batch, now)

    def record(self, effects: Iterable[Effect]) -> None:
        """Persist and log effects the kernel and the map already hold (adopted entries):
        every grant is told as new, no effector is called."""
        batch = Batch()
        for eff in effects:
            EFFECTS[type(eff)].fold(batch, eff)
        batch.new_map = list(batch.grants)
        self.persist(batch)
        now = self.loop.clock()
        for kind in EFFECTS.values():
            kind.record(self.recorder, batch, now)

    def guarded(self, what: str, call: Callable[[], Any]) -> None:
        """An effector call; a failure is reported and repaired later (the store keeps the
        truth, the reconcile puts the kernel/map back in step)."""
        # A duration, not a time of day: perf_counter, not the injected clock.
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            call()
        except Exception as exc:
            failure = exc
        self.recorder.timing(what, time.perf_counter() - started)
        if failure is not None:
            self.error(f"{what}: {failure}")
            log.error("action=%s-error error=%s", what, failure)
            self.effector_failed()

    def persist(self, batch: Batch, positions: bool = False) -> None:
        """One transaction: the positions (when asked) and every kind's store write."""
        if self.store_dirty:
            # Kept for the resync (on its timer); no position moves past this batch.
            self._hold(batch)
            return
        store = self.parts.store
        try:
            with store.transaction():
                if positions:
                    self._save_positions()
                for kind in EFFECTS.values():
                    rows = kind.store_rows(batch)
                    if rows:
                        getattr(store, kind.store_method)(rows)
                for write in _STORE_LAST:
                    write(self.parts, batch)
        except Exception as exc:
            self.error(f"store: {exc}")
            log.error("action=store-error error=%s (positions held back until it is written)",
                      exc)
            self._hold(batch)
            self._store_failed()

    def _save_positions(self) -> None:
        """Inside a transaction: the sources' positions."""
        for src in self.parts.sources:
            src.save_positions()

    def _hold(self, batch: Batch) -> None:
        self.pending.merge(batch.grants, batch.revoked, batch.bans, batch.lifted)
        self.suspensions_held |= bool(batch.suspended or batch.unsuspended)
        self.unsuspended_held.difference_update(batch.suspended)
        self.unsuspended_held.update(batch.unsuspended)

    def _store_failed(self) -> None:
        """A commit failed: the engine is ahead of the store until a resync succeeds."""
        self.store_dirty = True
        self.parts.store.positions_held = True
        if not self.loop.armed("storesync"):
            self.loop.call_at("storesync", self.loop.clock() + self.retry_delay)

    def _on_storesync(self, now: float) -> None:
        self.loop.cancel("storesync")
        self.resync()

    def resync(self) -> bool:
        """Write the changes the store lacks, then the positions, in one transaction."""
        store, engine = self.parts.store, self.parts.engine
        store.positions_held = False
        try:
            with store.transaction():
                self.pending.write(store, engine.offender_rows)
                if self.suspensions_held:
                    # Suspensions are few: the engine's set is written whole.
                    store.replace_suspensions(engine.accounts.suspensions.values(),
                                              self.unsuspended_held)
                    store.put_suspension_history(engine.accounts.history_rows())
                store.write_held_cursors()
                self._save_positions()
        except Exception as exc:
            store.positions_held = True
            self.retry_delay = min(self.retry_delay * 2, STORE_RETRY_MAX_DELAY)
            self.loop.call_at("storesync", self.loop.clock() + self.retry_delay)
            log.error("action=store-resync result=failed retry_in=%.0f error=%s",
                      self.retry_delay, exc)
            return False
        self.store_dirty = False
        self.pending = PendingWrites()
        self.unsuspended_held = set()
        store.held_cursors.clear()
        self.retry_delay = STORE_RETRY_DELAY
        log.info("action=store-resync result=ok grants=%d bans=%d", len(engine.grants),
                 len(engine.bans))
        return True

    def save_positions(self) -> None:
        """The sources' positions, unless the store lags (they go with the resync then)."""
        if self.store_dirty:
            return
        try:
            with self.parts.store.transaction():
                self._save_positions()
        except Exception as exc:
            self.error(f"positions: {exc}")
            log.error("action=positions-error error=%s", exc)
            return

    def final_save(self) -> None:
        """At stop: the resync if the store lags, the positions, the whole offender history."""
        if self.store_dirty:
            self.resync()
        self.save_positions()
        try:
            if not self.store_dirty:
                self.parts.store.put_offenders(self.parts.engine.offender_rows())
        except Exception as exc:
            log.error("action=store-error error=%s", exc)
