"""logwatchd: the Daemon wires sources -> parser -> engine -> effects on one Loop (loop.py).

Its collaborators come from factory.py (or a test's fakes, passed in as Parts); effects go
through the one table of effects.py; control commands through services/commands.py; the
reconcile and periodic checks live in upkeep.py, reload in reload.py, flags and the process
in main.py (`python3 -m logwatch.daemon.app` still runs main)."""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from logwatch import __version__
from logwatch.clock import Clock, wall
from logwatch.daemon import factory
from logwatch.daemon.accountingside import DRAIN_TIMEOUT, AccountingSide
from logwatch.daemon.accountkeep import AccountKeeper
from logwatch.daemon.actionlog import ActionLog
from logwatch.daemon.config import Config
from logwatch.daemon.effects import Effects, Recorder
from logwatch.daemon.factory import (  # noqa: F401  (re-exported for callers of app)
    Parts,
    StartupError,
    effective_rules_dirs,
    mynetworks,
    own_addresses,
)
from logwatch.daemon.fleet import FleetSync, make_fleet
from logwatch.daemon.loop import Loop
from logwatch.daemon.main import absolute_args, build_parser, main  # noqa: F401
from logwatch.daemon.policyside import PolicySide
from logwatch.daemon.reload import reload as reload_daemon
from logwatch.daemon.sdnotify import notify as _sd_notify
from logwatch.daemon.sdnotify import watchdog_interval as _sd_watchdog_interval
from logwatch.daemon.sourcefds import SourceFds
from logwatch.daemon.status import Counters, note_newest, snapshot, summary
from logwatch.daemon.upkeep import FWCHECK_DUTY, Upkeep  # noqa: F401
from logwatch.daemon.watchers import SdWatchdog, ServiceTimers, WatchdogRuns, WhitelistWatch
from logwatch.parsing.events import Event
from logwatch.protocols import Source, StreamSource, WatchesMissing
from logwatch.services import ServiceError, start_services
from logwatch.services.commands import Actions, Commands
from logwatch.sources.lag import LagMeter
from logwatch.state import series

log = logging.getLogger("logwatchd.daemon")

POSITION_SAVE_INTERVAL = 1.0     # positions are persisted at least once a second
POLICY_LOG_SLICE = 64 << 10     # log bytes per source per turn with policy.listen (~1 ms)
SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def sd_notify(state: str) -> None:
    """Tell systemd about our state (no-op without NOTIFY_SOCKET)."""
    try:
        _sd_notify(state)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


def _ended(src: Source) -> bool:
    return isinstance(src, StreamSource) and src.eof


class _Part:
    """A collaborator held in the daemon's Parts (so effects and upkeep see a replacement)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.parts, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.parts, self.name, value)


class Daemon:
    """Wires the collaborators on the loop: timers, fds, signals, the data path, services."""

    store = _Part()
    engine = _Part()
    parser = _Part()
    whitelist = _Part()
    relay_map = _Part()
    firewall = _Part()
    watchdog = _Part()
    sources = _Part()
    actions = _Part()
    suspension_table = _Part()
    accounting = _Part()

    def __init__(self, cfg: Config, config_path: str | None, args: argparse.Namespace,
                 clock: Clock = wall, parts: Parts | None = None,
                 loop: Loop | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.args = args
        self.clock = clock
        self.parts = parts if parts is not None else Parts(actions=ActionLog(
            cfg.daemon.actions_log))
        self.loop = loop if loop is not None else Loop(clock)
        self.counters = Counters(started=clock())
        self.lag = LagMeter(started=self.counters.started)
        self.state_lock: Any = None
        self.effects = Effects(self.parts, self.loop, Recorder(
            self.counters.actions, lambda: self.parts.actions, lambda: self.dry_run,
            lambda: self.cfg.accounting.suspend_action, self.counters.observe,
            self.counters.bans_by_reason), self.error,
            lambda: self.upkeep.schedule_repair())
        self.upkeep = Upkeep(self.parts, self.loop, lambda: self.cfg, self.error,
                             self.counters.actions)
        self.commands: Commands | None = None
        self.fleet: FleetSync | None = None
        self.account_keeper = AccountKeeper(self.parts, self.loop,
                                            lambda: self.cfg.accounting.window, self.error)
        self.fds = SourceFds(self.parts, self.loop, self._pump,
                             lambda: self.cfg.sources.poll_interval)
        self.whitelist_watch = WhitelistWatch(self.loop, lambda: self.cfg.bans.whitelist,
                                              self.reload_whitelist)
        self.watchdog_runs = WatchdogRuns(self.parts, self.loop, self.feed, self.error)
        self.service_timers = ServiceTimers(self.parts, self.loop)
        self.policy = PolicySide(self.loop, self.parts, self.feed, self.error)
        self.sd_watchdog = SdWatchdog(self.loop, sd_notify, _sd_watchdog_interval)
        self.series = series.SeriesRecorder(lambda: self.store, self.status, self.loop,
                                            self.error)
        self.loop.on_timer("engine", lambda now: self.apply(self.engine.sweep()))
        self.loop.on_timer("positions", self._on_positions)

    @property
    def dry_run(self) -> bool:
        return self.cfg.daemon.dry_run

    @property
    def timers(self) -> dict[str, float]:
        return self.loop.timers

    @property
    def stopping(self) -> bool:
        return self.loop.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.loop.stopping = value

    def error(self, message: str) -> None:
        self.counters.errors.append({"time": self.clock(), "message": message})
        self.counters.errors_total += 1

    # -- building -------------------------------------------------------------------

    def load_whitelist(self, cfg: Config) -> Any:
        self.whitelist_watch.note_read(cfg.bans.whitelist)
        return factory.load_whitelist(cfg, log)

    def make_sources(self, cfg: Config) -> list[Any]:
        sources = factory.make_sources(cfg, self.on_chunk, self.store)
        if cfg.policy.listen:
            # smtpd processes wait on the same loop: the log side reads in small slices.
            # (The tail and journal sources' per-call `budget` of bytes.)
            for src in sources:
                if hasattr(src, "budget"):
                    src.budget = POLICY_LOG_SLICE
        return sources

    def setup(self) -> None:
        """Open the store, load rules and state, reconcile the effectors, open the sources."""
        cfg = self.cfg
        # First of all, so that a SIGTERM during a slow start is a clean stop, not a kill.
        self.loop.setup_signals(SIGNALS)
        reset = bool(getattr(self.args, "reset_state", False))
        self.state_lock, self.store, saved = factory.open_state(cfg, reset, log)
        self._start_accounting(cfg)       # it loads its state meanwhile: waited for below
        try:
            self.parser = factory.load_parser(cfg, self.clock, self.error)
        except Exception as exc:
            raise StartupError(f"rules: {exc}") from exc
        self.whitelist = self.load_whitelist(cfg)
        self.whitelist_watch.follow(cfg.bans.whitelist)
        self.engine = factory.make_engine(cfg, self.whitelist, self.clock)
        # Anything that expired (or got whitelisted) while we were down goes now, before the
        # reconcile; effectors do not exist yet, so this only cleans the store.
        self.apply(self.engine.load(*saved))
        try:
            self.apply(factory.load_accounts(self.engine, self.store))
        except sqlite3.Error as exc:
            raise StartupError(f"state: {self.store.path}: {exc}") from exc
        self.counters.bans_by_reason.reset(self.engine.bans.values())
        self.apply(self.engine.sweep())
        try:
            self.firewall, self.relay_map = factory.make_effectors(cfg, self.dry_run, self.clock)
            self.suspension_table = factory.make_suspension_table(cfg, self.dry_run,
                                                                  self.set_sasl_entries)
            self.upkeep.adopt_live_entries(self.effects, reset)
            self.upkeep.reconcile()
        except Exception as exc:   # RelayMapError, FirewallError, OSError: say which and stop
            raise StartupError(f"effectors: {exc}") from exc
        self.fleet = make_fleet(self)
        if self.fleet is not None:
            self.fleet.connect(reconcile=False)
        try:
            self.store.mark_started()
        except sqlite3.Error as exc:   # an empty store then stays "new" for the next start
            log.error("action=store-error error=%s", exc)
        try:
            self.watchdog = factory.make_watchdog(cfg, self.dry_run, self.clock)
        except ValueError as exc:
            raise StartupError(f"watchdog: {exc}") from exc
        try:
            self.policy.setup(cfg, self.dry_run)
        except Exception as exc:   # SaslAccessError: the sasl access map cannot be written
            raise StartupError(f"policy: {exc}") from exc
        try:
            self.parts.services = start_services(cfg, self.handle_request, self.loop.selector,
                                                 self.clock, {"policy": self.policy})
        except ServiceError as exc:
            raise StartupError(str(exc)) from exc
        try:
            if self.accounting is not None:
                self.accounting.wait_ready()
        except OSError as exc:
            raise StartupError(f"accounting: {exc}") from exc
        try:
            self.sources = self.make_sources(cfg)
        except Exception as exc:
            raise StartupError(f"sources: {exc}") from exc
        self.effects.save_positions()   # where a new file starts (its end) must survive a crash
        self.fds.register()
        self._schedule_all()
        log.info("action=start version=%s config=%s dry_run=%s grants=%d bans=%d sources=%d",
                 __version__, self.config_path or "(defaults)", int(self.dry_run),
                 len(self.engine.grants), len(self.engine.bans), len(self.sources))

    def _start_accounting(self, cfg: Config) -> None:
        """The accounting process (accounting.enabled) started: it loads its state and catches
        the stats log up; its committed records come to on_records (the risk engine), a
        batch at a time."""
        if not cfg.accounting.enabled:
            return
        self.accounting = AccountingSide(cfg, self.loop, self.store, self.on_records, self.error,
                                         self.clock, bool(getattr(self.args, "debug", False)),
                                         checked=lambda: getattr(self.parser, "ruleset", None))
        try:
            self.accounting.start()
        except OSError as exc:
            raise StartupError(f"accounting: {exc}") from exc

    # -- sources on the loop --------------------------------------------------------

    def _pump(self, src: Source) -> None:
        # A reload may have replaced the sources while a stale ready fd of the same select()
        # batch is still queued: a closed source must not be read again.
        if src not in self.sources:
            return
        try:
            src.process()
        except Exception as exc:   # a source failing must not kill the daemon
            self.error(f"source {type(src).__name__}: {exc}")
            log.exception("action=source-error")
        self.fds.sync(src)
        # Only a stream source ends; files and the journal never do.
        if _ended(src) and all(_ended(s) for s in self.sources):
            # A syslog daemon piping into us (rsyslog omprog) closes the pipe to stop us,
            # and starts a new logwatchd when it comes back: end cleanly, state saved.
            if self.accounting is not None:     # it has drained and written the stats log
                self.accounting.close(DRAIN_TIMEOUT)
            log.info("action=stop reason=end-of-input")
            self.stopping = True

    # -- timers ---------------------------------------------------------------------

    def _schedule_all(self) -> None:
        now = self.clock()
        self.loop.call_at("positions", now + POSITION_SAVE_INTERVAL)
        self.whitelist_watch.schedule(now)
        self.upkeep.schedule(now)
        self.account_keeper.schedule(now)
        self.schedule_engine()
        self.watchdog_runs.schedule(now)
        self.sd_watchdog.schedule(now)
        self.series.schedule(now)
        if self.fleet is not None:
            self.fleet.schedule(now)

    def schedule_engine(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None:
            self.loop.cancel("engine")
        else:
            self.loop.call_at("engine", deadline)

    def _run_timers(self, now: float) -> None:
        self.loop.run_timers(now)
        self.schedule_engine()
        self.service_timers.schedule()

    def _on_positions(self, now: float) -> None:
        self.effects.save_positions()
        self.lag.update(now, self.sources)
        for src in self.sources:       # a log file still missing: warn, rate-limited
            if isinstance(src, WatchesMissing):
                src.check_missing()
        self.loop.call_at("positions", now + POSITION_SAVE_INTERVAL)

    # -- the data path ----------------------------------------------------------------

    def on_chunk(self, source: str, chunk: bytes) -> None:
        """Called by the sources with whole lines: parse, feed the engine, apply the effects."""
        events = self.parser.parse(chunk)
        if self.accounting is not None:
            # --stdin: the accounting process gets the chunk too (it reads files itself).
            self.accounting.on_chunk(source, chunk)
        # The sources' positions already include this chunk: committing them in the same
        # transaction as its effects makes a kill -9 neither lose nor replay an action. A
        # chunk without effects commits nothing (the 1 s timer saves the positions): replaying
        # it after a crash changes nothing, and most wakeups bring no effect at all.
        self.feed(events, positions=True)
        if self.fleet is not None:     # a shared store: the peers count these hits too
            self.fleet.publish_hits(events)

    def feed(self, events: Sequence[Event], positions: bool = False) -> None:
        effects = []
        handle = self.engine.handle
        for ev in events:
            self.counters.events[ev.kind] += 1
            effects.extend(handle(ev))
        if events:
            note_newest(self.counters, events[-1], self.clock())
            self.policy.observe(events)
        self.effects.apply(effects, positions=positions)

    def on_records(self, records: Iterable[Any]) -> None:
        """Message records and rejected attempts of the correlation stage: counted, scored,
        and a SASL ID over accounting.suspend_score suspended (through the effect table)."""
        self.on_record_batch(list(records))

    def on_record_batch(self, records: Sequence[Any]) -> None:
        """on_records() of a whole batch (in order): one effects.apply, one fleet publish."""
        effects = self.engine.account_batch(records)
        if effects:
            self.effects.apply(effects)
        if self.fleet is not None:     # a shared store: the peers' account scores add them
            self.fleet.publish_risk(records)
        if effects:
            self.schedule_engine()

    def apply(self, effects: Iterable[Any], positions: bool = False) -> None:
        """Effects through the effect table (effectors, store, actions log)."""
        self.effects.apply(effects, positions=positions)

    _apply = apply

    # -- whitelist ----------------------------------------------------------------------

    def reload_whitelist(self) -> None:
        """The whitelist file changed: re-read it; a now-whitelisted ban is lifted."""
        try:
            whitelist = self.load_whitelist(self.cfg)
        except Exception as exc:
            self.error(f"whitelist: {exc}")
            log.error("action=whitelist-error error=%s", exc)
            return
        self.whitelist = whitelist
        self.apply(self.engine.set_whitelist(whitelist))
        log.info("action=whitelist-reload path=%s", self.cfg.bans.whitelist)

    # -- control, status, reload ------------------------------------------------------

    reload = reload_daemon       # () -> (ok, message)

    def set_sasl_entries(self, contributor: str, entries: Any) -> None:
        """This contributor's check_sasl_access entries (login -> action); see HACKING."""
        self.policy.set_sasl_entries(contributor, entries)

    def status(self) -> dict[str, Any]:
        st = snapshot(self.parts, self.counters, self.lag, self.clock(), self.config_path,
                      self.dry_run)
        st["store"] = str(getattr(self.store, "path", "")) or None
        if self.fleet is not None:
            st["fleet"] = self.fleet.status()
        if self.policy.enabled:
            st["policy"] = self.policy.status()
        return st

    def summary(self) -> str:
        return summary(self.status())

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request -> one response, through the command table."""
        if self.commands is None or self.commands.engine is not self.engine:
            self.commands = Commands(self.engine, Actions(
                status=self.status, apply=self.apply, reload=self.reload,
                changed=self.schedule_engine, policy=self.policy,
                messages=lambda r: self.accounting.query(r) if self.accounting else {
                    "ok": False, "error": "messages: accounting is off (accounting.enabled)"},
                series=lambda req: series.answer(self.store, req, self.clock()),
                **(self.fleet.actions() if self.fleet is not None else {})))
        return self.commands(req)

    # -- the loop -------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while (sig := self.loop.next_signal()) is not None:
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("action=stop signal=%s", signal.Signals(sig).name)
                self.stopping = True
            elif sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGUSR1:
                log.info(self.summary())

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; then save everything and return."""
        sd_notify("READY=1")
        sd_notify(f"STATUS=watching {len(self.sources)} source(s)")
        try:
            # Data already waiting (e.g. --from-start) is read before the first select().
            for src in list(self.sources):
                self._pump(src)
            while not self.stopping:
                # A regular file on stdin has no fd to wait on: it is read a chunk per turn.
                busy = [lambda s=src: self._pump(s) for src in self.sources
                        if isinstance(src, StreamSource) and src.pending]
                self.loop.turn(busy)
                self._handle_signals()
                if self.stopping:
                    break
                self._run_timers(self.clock())
        finally:
            # Even a bug escaping the loop saves positions and state and removes the socket.
            self.shutdown()

    def shutdown(self) -> None:
        """Save state and close everything (within the 2 s SIGTERM budget)."""
        sd_notify("STOPPING=1")
        if self.accounting is not None:   # its last records reach the risk engine first
            self.accounting.close()
        self.series.flush(self.clock())
        self.account_keeper.flush(self.clock(), final=True)
        self.effects.final_save()
        if self.watchdog is not None:
            self.watchdog.close()
        self.whitelist_watch.follow(None)
        for src in self.sources:
            try:
                src.close()
            except Exception as exc:
                log.error("action=source-close-error error=%s", exc)
        for service in self.parts.services:
            service.close()
        try:
            self.policy.close()
        except Exception as exc:   # the store: the last second of counters may be lost
            log.error("action=policy-close-error error=%s", exc)
        if self.firewall is not None and self.cfg.firewall.flush_on_stop:
            self.effects.guarded("firewall", self.firewall.flush)
        self.actions.close()
        if self.fleet is not None:
            self.fleet.close()
        self.store.close()
        if self.state_lock is not None:
            self.state_lock.release()
        log.info("action=stopped grants=%d bans=%d", len(self.engine.grants),
                 len(self.engine.bans))


if __name__ == "__main__":
    sys.exit(main())
