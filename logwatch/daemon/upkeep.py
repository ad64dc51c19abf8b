"""Keeping the kernel and the map in step with the engine: the reconcile (start, reload,
repair after a failed write), the periodic map and firewall checks, the retirement of a
firewall an earlier config created, and the adoption of live entries into a new store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from logwatch.daemon.effects import Effects
from logwatch.daemon.factory import Parts
from logwatch.effectors.firewall import firewall_identity, old_firewall
from logwatch.engine.model import BanAdded, GrantAdded

log = logging.getLogger("logwatchd.daemon")

MAP_CHECK_INTERVAL = 60.0        # a missing or corrupt relay map is rebuilt from the store
FWCHECK_DUTY = 20.0              # the firewall check waits at least 20x its own duration
REPAIR_DELAY = 2.0               # first reconcile after a failed firewall/map write ...
REPAIR_MAX_DELAY = 300.0         # ... doubling while it keeps failing, up to this


class Upkeep:
    """Reconcile and checks, on the loop's "repair", "mapcheck" and "fwcheck" timers."""

    def __init__(self, parts: Parts, loop: Any, config: Callable[[], Any],
                 error: Callable[[str], None], counts: Any) -> None:
        self.parts = parts
        self.loop = loop
        self.config = config         # the running config (replaced by a reload)
        self.error = error
        self.counts = counts
        self.repair_delay = REPAIR_DELAY
        loop.on_timer("repair", self._on_repair)
        loop.on_timer("mapcheck", self._on_mapcheck)
        loop.on_timer("fwcheck", self._on_fwcheck)

    def schedule(self, now: float) -> None:
        self.loop.call_at("mapcheck", now + MAP_CHECK_INTERVAL)
        self.loop.call_at("fwcheck", now + self.config().firewall.check_interval)

    def reconcile(self) -> None:
        """Kernel and map := the store's live state (start, reload)."""
        p = self.parts
        if p.relay_map is not None:
            p.relay_map.rebuild(list(p.engine.grants))
        if p.suspension_table is not None:
            p.suspension_table.rebuild(list(p.engine.accounts.suspensions))
        self.retire_firewall()
        if p.firewall is not None:
            p.firewall.setup()
            p.firewall.reconcile(list(p.engine.bans.values()), self.loop.clock())

    def schedule_repair(self) -> None:
        """After a failed firewall or map write: reconcile soon, backing off while it fails.
        Until then the engine takes the IP for banned (or granted) and the kernel does not."""
        if not self.loop.armed("repair"):
            self.loop.call_at("repair", self.loop.clock() + self.repair_delay)

    def _on_repair(self, now: float) -> None:
        self.loop.cancel("repair")
        try:
            self.reconcile()
        except Exception as exc:
            self.repair_delay = min(self.repair_delay * 2, REPAIR_MAX_DELAY)
            self.error(f"repair: {exc}")
            log.error("action=repair result=failed retry_in=%.0f error=%s", self.repair_delay, exc)
            self.schedule_repair()
            return
        self.repair_delay = REPAIR_DELAY
        log.info("action=repair result=ok grants=%d bans=%d", len(self.parts.engine.grants),
                 len(self.parts.engine.bans))

    def _on_mapcheck(self, now: float) -> None:
        """Someone deleted or damaged the map: rebuild it from the live grants."""
        self.loop.call_at("mapcheck", now + MAP_CHECK_INTERVAL)
        self._check_suspensions()
        rmap = self.parts.relay_map
        if rmap is None:
            return
        try:
            if rmap.check():
                return
            log.warning("action=relay-map-repair map=%s grants=%d", self.config().relay.map,
                        len(self.parts.engine.grants))
            rmap.rebuild(list(self.parts.engine.grants))
        except Exception as exc:
            self.error(f"relaymap check: {exc}")
            log.error("action=relaymap-error error=%s", exc)

    def _check_suspensions(self) -> None:
        """The check_sasl_access table := the suspensions again: a no-op while the file is
        there and holds them, a rebuild when someone deleted it."""
        table = self.parts.suspension_table
        if table is None:
            return
        try:
            table.rebuild(list(self.parts.engine.accounts.suspensions))
        except Exception as exc:
            self.error(f"saslaccess check: {exc}")
            log.error("action=saslaccess-error error=%s", exc)

    def _on_fwcheck(self, now: float) -> None:
        took = self.check_firewall()
        # Reading 100,000 rules back takes seconds: keep the check under 1/20 of the time.
        self.loop.call_at("fwcheck", self.loop.clock() + max(
            self.config().firewall.check_interval, FWCHECK_DUTY * took))

    def check_firewall(self) -> float:
        """Someone flushed or edited our chain/sets/table: put the engine's bans back.
        Returns the seconds the check took (a duration: the monotonic clock, not the time)."""
        fw = self.parts.firewall
        if fw is None:
            return 0.0
        from logwatch.effectors.firewall import drift

        started = time.monotonic()
        bans = list(self.parts.engine.bans.values())
        try:
            found = drift(fw, bans, self.loop.clock())
            if not found:
                return time.monotonic() - started
            log.warning("action=firewall-repair backend=%s drift=%s bans=%d",
                        fw.backend, ",".join(found), len(bans))
            self.counts["firewall-repair"] += 1
            fw.setup()
            fw.reconcile(bans, self.loop.clock())
        except Exception as exc:
            self.error(f"firewall check: {exc}")
            log.error("action=firewall-error error=%s", exc)
            self.schedule_repair()
        return time.monotonic() - started

    def retire_firewall(self) -> None:
        """Remove what an earlier run or config created in the kernel under another backend or
        other names (kept in the store), before ours is set up: both may share a name."""
        cfg = self.config()
        dry_run = cfg.daemon.dry_run
        if dry_run:
            return                       # a dry run changes nothing, and remembers nothing
        current = firewall_identity(cfg, dry_run)
        store = self.parts.store
        stored = store.get_firewall_identity()
        if stored is not None and tuple(stored) != current:
            try:
                old = old_firewall(stored)
            except Exception as exc:     # not a usable identity (names now refused): forget it
                log.error("action=firewall-retire result=skipped old=%s error=%s",
                          ":".join(stored), exc)
                old = None
            try:
                if old is not None:
                    old.flush()
            except Exception as exc:     # the identity stays: the next start/reload retries
                self.error(f"old firewall {stored}: {exc}")
                log.error("action=firewall-retire result=failed old=%s error=%s",
                          ":".join(stored), exc)
                return
            log.info("action=firewall-retire old=%s new=%s", ":".join(stored),
                     ":".join(current) if current else "none")
        if stored is None or tuple(stored) != current:
            store.set_firewall_identity(current)

    def adopt_live_entries(self, effects: Effects, reset: bool) -> None:
        """A new store (state.db missing or 0-byte) must not make the reconcile delete every
        live ban and grant: adopt them, unless --reset-state asks for a clean slate."""
        p = self.parts
        if not p.store.fresh or reset:
            return
        from logwatch.state.adopt import adopt, live_entries

        nets, ips = live_entries(p.firewall, p.relay_map)
        if not nets and not ips:
            return
        found = adopt(p.engine, nets, ips)
        # Persisted and logged only: the entries are in the kernel and the map already.
        effects.record([e for e in found.effects if isinstance(e, (GrantAdded, BanAdded))])
        for why in found.skipped:
            log.warning("action=adopt-skipped entry=%s", why)
        message = (f"state store {p.store.path} was empty or new while the firewall held "
                   f"{len(nets)} and the map {len(ips)} of our entries: adopted "
                   f"{found.bans} ban(s) and {found.grants} grant(s); --reset-state drops them")
        self.error(message)
        log.warning("action=adopt bans=%d grants=%d skipped=%d store=%s", found.bans,
                    found.grants, len(found.skipped), p.store.path)
