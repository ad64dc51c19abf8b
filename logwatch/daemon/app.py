"""logwatchd: the daemon. Sources -> parser -> engine -> effectors in one selectors loop.

Why `selectors` and not asyncio: the daemon watches a handful of fds (an inotify fd per source,
the control socket and its few clients, the signal pipe) and a handful of timers (the engine's
next expiry, position saves, the watchdog scan, sd_notify pings, the whitelist check). A plain
loop computing the earliest timer and blocking in select() is all that needs; asyncio would add
a framework, callbacks from other threads and hidden buffering for no gain, and every effector
call is a short blocking subprocess/DB write we want strictly ordered anyway.
"""

from __future__ import annotations

import argparse
import errno
import logging
import logging.handlers
import os
import selectors
import signal
import sqlite3
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from logwatch import __version__
from logwatch.clock import wall
from logwatch.daemon.actionlog import ActionLog
from logwatch.daemon.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_RULES_DIR,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
)
from logwatch.daemon.hints import access_hint
from logwatch.daemon.sdnotify import notify as _sd_notify
from logwatch.daemon.sdnotify import watchdog_interval as _sd_watchdog_interval
from logwatch.effectors.firewall import FIREWALLS
from logwatch.engine.model import Ban, BanAdded, BanLifted, Effect, Grant, GrantAdded, GrantRevoked
from logwatch.engine.targets import check_ban, check_grant
from logwatch.parsing.events import Event, normalize_ip
from logwatch.services.control import ControlError, ControlServer
from logwatch.services.queries import answer_query
from logwatch.sources.filewatch import FileWatch
from logwatch.sources.lag import LagMeter
from logwatch.state.lock import StateLock, StateLockError
from logwatch.state.pending import PendingWrites
from logwatch.state.store import Store, StoreError
from logwatch.util.duration import duration_arg, duration_or_zero_arg, parse_duration

log = logging.getLogger("logwatchd.daemon")

POSITION_SAVE_INTERVAL = 1.0     # positions are persisted at least once a second
WHITELIST_CHECK_INTERVAL = 2.0   # mtime check of the whitelist file when inotify is missing
MAP_CHECK_INTERVAL = 60.0        # a missing or corrupt relay map is rebuilt from the store
FWCHECK_DUTY = 20.0              # the firewall check waits at least 20x its own duration
REPAIR_DELAY = 2.0               # first reconcile after a failed firewall/map write ...
REPAIR_MAX_DELAY = 300.0         # ... doubling while it keeps failing, up to this
STORE_RETRY_DELAY = 1.0          # resync of the store after a failed commit (disk full) ...
STORE_RETRY_MAX_DELAY = 30.0     # ... doubling while it keeps failing, up to this
MAX_ERRORS = 20                  # last errors kept for `logwatchctl status`

def sd_notify(state: str) -> None:
    """Tell systemd about our state (no-op without NOTIFY_SOCKET)."""
    try:
        _sd_notify(state)
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


class StartupError(Exception):
    """The daemon cannot start (bad config, unwritable state dir, busy socket...)."""


@dataclass
class Counters:
    """What `logwatchctl status` reports besides the live grants and bans."""

    started: float = field(default_factory=wall)
    events: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    newest_event: float | None = None
    errors: deque = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))
    reloads: int = 0


def _ip_of(net: str) -> str:
    """192.0.2.7/32 -> 192.0.2.7 for display; networks stay in CIDR form."""
    addr, _, plen = net.partition("/")
    if plen and plen in ("32", "128"):
        return addr
    return net


def _reason_text(reason: dict[str, int] | str | None) -> str:
    if not reason:
        return ""
    if isinstance(reason, str):
        return reason
    return ",".join(f"{k}:{v}" for k, v in sorted(reason.items()))


class Daemon:
    """The running daemon: owns the loop, the state and every component."""

    def __init__(self, cfg: Config, config_path: str | None, args: argparse.Namespace,
                 clock: Callable[[], float] = wall) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.args = args
        self.clock = clock
        self.counters = Counters(started=clock())
        self.lag = LagMeter(started=self.counters.started)
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.pending_signals: list[int] = []
        self.timers: dict[str, float] = {}
        self.sources: list[Any] = []
        self._src_fds: dict[int, int | None] = {}
        self.whitelist_mtime: float | None = None
        self.whitelist_watch: FileWatch | None = None
        self.repair_delay = REPAIR_DELAY
        # True while the store lags behind the engine (a commit failed): positions are then
        # not saved, so a restart re-reads the lines whose effects are not durable yet.
        self.store_dirty = False
        self.pending = PendingWrites()
        self.store_retry_delay = STORE_RETRY_DELAY
        self.state_lock: StateLock | None = None
        self.actions = ActionLog(cfg.daemon.actions_log)
        self.dry_run = cfg.daemon.dry_run
        self.firewall: Any = None
        self.control: ControlServer | None = None
        self.relay_map: Any = None
        self.watchdog: Any = None

    # -- building the pieces ------------------------------------------------------

    def _load_parser(self, cfg: Config) -> Any:
        from logwatch.parsing.parser import Parser
        from logwatch.parsing.rules import load_ruleset

        ruleset = load_ruleset(effective_rules_dirs(cfg), cfg.rules.local_dir)
        parser = Parser(ruleset, clock=self.clock, matcher=cfg.rules.matcher)
        parser.on_quarantine = self.error      # a rule over the time budget shows in status
        return parser

    def _load_whitelist(self, cfg: Config) -> Any:
        from logwatch.engine.whitelist import Whitelist

        path = cfg.bans.whitelist
        self.whitelist_mtime = self._mtime(path)
        if not path:
            return Whitelist()
        wl, warnings = Whitelist.from_file(path)
        for warning in warnings:     # bad lines are skipped, the rest applies
            log.warning("action=whitelist-warning %s", warning)
        return wl

    @staticmethod
    def _mtime(path: str | None) -> float | None:
        if not path:
            return None
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None

    def _make_effectors(self, cfg: Config) -> None:
        from logwatch.effectors.firewall import make_firewall
        from logwatch.effectors.relaymap import open_relay_map

        flog = logging.getLogger("logwatchd.firewall")
        rlog = logging.getLogger("logwatchd.relaymap")
        self.firewall = (make_firewall(cfg.firewall, dry_run=self.dry_run, log=flog,
                                       clock=self.clock)
                         if cfg.bans.enabled else None)
        self.relay_map = (open_relay_map(cfg.relay.map, value=cfg.relay.value,
                                         text_file=cfg.relay.text_file, dry_run=self.dry_run,
                                         log=rlog)
                          if cfg.relay.enabled else None)

    def _make_watchdog(self, cfg: Config) -> Any:
        if not cfg.watchdog.enabled or cfg.watchdog.limit <= 0:
            return None
        from logwatch.effectors.watchdog import Watchdog

        return Watchdog(cfg.watchdog, dry_run=self.dry_run,
                        log=logging.getLogger("logwatchd.watchdog"), clock=self.clock)

    def _make_sources(self, cfg: Config) -> list[Any]:
        from logwatch.sources import SourceContext, build_sources

        return build_sources(cfg.sources, SourceContext(self.on_chunk, self.store))

    def setup(self) -> None:
        """Open the store, load rules and state, reconcile the effectors, open the sources."""
        cfg = self.cfg
        # First of all, so that a SIGTERM during a slow start is a clean stop, not a kill.
        self._setup_signals()
        saved = self._open_state(cfg.daemon.state_dir)
        try:
            self.parser = self._load_parser(cfg)
        except Exception as exc:
            raise StartupError(f"rules: {exc}") from exc
        from logwatch.engine.core import Engine

        self.whitelist = self._load_whitelist(cfg)
        self._watch_whitelist(cfg.bans.whitelist)
        self.engine = Engine(cfg.relay, cfg.bans, whitelist=self.whitelist,
                             mynetworks=mynetworks(cfg), own_addresses=own_addresses(),
                             clock=self.clock)
        # Anything that expired (or got whitelisted) while we were down goes now, before the
        # reconcile; effectors do not exist yet, so this only cleans the store.
        self._apply(self.engine.load(*saved))
        self._apply(self.engine.sweep())
        try:
            self._make_effectors(cfg)
            self._adopt_live_entries()
            self._reconcile()
        except Exception as exc:   # RelayMapError, FirewallError, OSError: say which and stop
            raise StartupError(f"effectors: {exc}") from exc
        try:
            self.store.mark_started()
        except sqlite3.Error as exc:   # an empty store then stays "new" for the next start
            log.error("action=store-error error=%s", exc)
        try:
            self.watchdog = self._make_watchdog(cfg)
        except ValueError as exc:
            raise StartupError(f"watchdog: {exc}") from exc
        self.control = ControlServer(cfg.daemon.socket, self.handle_request, self.selector,
                                     clock=self.clock)
        try:
            self.control.start()
        except ControlError as exc:
            hint = access_hint(os.path.dirname(cfg.daemon.socket), "daemon.socket (--socket)")
            raise StartupError(f"control socket: {exc}{hint}") from exc
        try:
            self.sources = self._make_sources(cfg)
        except Exception as exc:
            raise StartupError(f"sources: {exc}") from exc
        self._save_positions()     # where a new file starts (its end) must survive a crash
        self._register_sources()
        self._schedule_all()
        log.info("action=start version=%s config=%s dry_run=%s grants=%d bans=%d sources=%d",
                 __version__, self.config_path or "(defaults)", int(self.dry_run),
                 len(self.engine.grants), len(self.engine.bans), len(self.sources))

    def _open_state(self, state_dir: str) -> tuple[list[Grant], list[Ban], list[Any]]:
        """Lock the state directory, open the store, read the saved grants, bans, history."""
        try:
            os.makedirs(state_dir, exist_ok=True)
            # Before anything else: a second instance must not touch the map or the firewall.
            self.state_lock = StateLock(state_dir)
            self.state_lock.acquire()
            self.store = Store(os.path.join(state_dir, "state.db"))
            if getattr(self.args, "reset_state", False):
                self.store.replace_state([], [], [])
                log.warning("action=reset-state store=%s (saved grants and bans discarded)",
                            self.store.path)
            return (self.store.load_grants(), self.store.load_bans(),
                    self.store.load_offenders())
        except sqlite3.Error as exc:   # a corrupt page shows only when it is read
            raise StartupError(f"state: {self.store.path}: {exc} (move it aside to start "
                               "afresh: live bans and grants are then adopted)") from exc
        except (OSError, StoreError, StateLockError) as exc:
            in_use = isinstance(exc, StateLockError) and not isinstance(exc.__cause__, OSError)
            hint = "" if in_use else access_hint(state_dir, "daemon.state_dir (--state-dir)")
            raise StartupError(f"state: {exc}{hint}") from exc

    def _adopt_live_entries(self) -> None:
        """A new store (state.db missing or 0-byte) must not make the reconcile delete every
        live ban and grant: adopt them, unless --reset-state asks for a clean slate."""
        if not self.store.fresh or getattr(self.args, "reset_state", False):
            return
        from logwatch.state.adopt import adopt, live_entries

        nets, ips = live_entries(self.firewall, self.relay_map)
        if not nets and not ips:
            return
        found = adopt(self.engine, nets, ips)
        grants = {e.grant.ip: e.grant for e in found.effects if isinstance(e, GrantAdded)}
        bans = {e.ban.net: e.ban for e in found.effects if isinstance(e, BanAdded)}
        # Persisted only: the entries are in the kernel and the map already.
        self._persist(grants, {}, bans, {})
        self._log_actions(grants, list(grants), {}, bans, {}, self.clock())
        for why in found.skipped:
            log.warning("action=adopt-skipped entry=%s", why)
        message = (f"state store {self.store.path} was empty or new while the firewall held "
                   f"{len(nets)} and the map {len(ips)} of our entries: adopted "
                   f"{found.bans} ban(s) and {found.grants} grant(s); --reset-state drops them")
        self.error(message)
        log.warning("action=adopt bans=%d grants=%d skipped=%d store=%s", found.bans,
                    found.grants, len(found.skipped), self.store.path)

    def _reconcile(self) -> None:
        """Kernel and map := the store's live state (start, reload)."""
        if self.relay_map is not None:
            self.relay_map.rebuild(list(self.engine.grants))
        self._retire_firewall()
        if self.firewall is not None:
            self.firewall.setup()
            self.firewall.reconcile(list(self.engine.bans.values()), self.clock())

    def _register_sources(self) -> None:
        for src in self.sources:
            self._sync_fd(src)

    def _sync_fd(self, src: Any) -> None:
        """Keep the selector in step with the source's fd (it drops to polling, stdin ends)."""
        old = self._src_fds.get(id(src))
        new = src.fileno()
        # Before the early return: a source polled from the start (no inotify) has old and
        # new both None, and without the timer it would never be read.
        if new is None and "poll" not in self.timers:
            self.timers["poll"] = self.clock() + self.cfg.sources.poll_interval
        if old == new:
            return
        if old is not None:
            try:
                self.selector.unregister(old)
            except (KeyError, ValueError):
                pass
        if new is not None:
            self.selector.register(new, selectors.EVENT_READ, lambda m, s=src: self._pump(s))
        self._src_fds[id(src)] = new

    def _unregister_sources(self) -> None:
        for src in self.sources:
            fd = self._src_fds.pop(id(src), None)
            if fd is not None:
                try:
                    self.selector.unregister(fd)
                except (KeyError, ValueError):
                    pass

    def _setup_signals(self) -> None:
        """Signal handlers only queue the signal; the wakeup fd makes select() return at once."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sig_r = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self._sig_w = wfd
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        self.selector.register(rfd, selectors.EVENT_READ, self._drain_signal_pipe)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pending_signals.append(signum)

    def _drain_signal_pipe(self, mask: int) -> None:
        try:
            while os.read(self._sig_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- timers -------------------------------------------------------------------

    def _schedule_all(self) -> None:
        now = self.clock()
        self.timers["positions"] = now + POSITION_SAVE_INTERVAL
        if self.whitelist_watch is None or self.whitelist_watch.fileno() is None:
            self.timers["whitelist"] = now + WHITELIST_CHECK_INTERVAL
        self.timers["mapcheck"] = now + MAP_CHECK_INTERVAL
        self.timers["fwcheck"] = now + self.cfg.firewall.check_interval
        self._schedule_engine()
        self._schedule_watchdog(now)
        period = _sd_watchdog_interval()
        if period:
            self.sd_interval = period / 2     # ping twice per WatchdogSec= period
            self.timers["sd_watchdog"] = now

    def _schedule_engine(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None:
            self.timers.pop("engine", None)
        else:
            self.timers["engine"] = deadline

    def _schedule_watchdog(self, now: float) -> None:
        interval = self.watchdog.interval() if self.watchdog is not None else None
        if interval is None:
            self.timers.pop("watchdog", None)
            return
        when = now + interval
        pending = self.watchdog.next_deadline()    # a SIGKILL due after the grace
        self.timers["watchdog"] = when if pending is None else min(when, pending)

    def _run_timers(self, now: float) -> None:
        due = [name for name, when in self.timers.items() if when <= now]
        for name in due:
            if name == "engine":
                self._apply(self.engine.sweep())
            elif name == "positions":
                self._save_positions()
                self.lag.update(now, self.sources)
                for src in self.sources:       # a log file still missing: warn, rate-limited
                    if hasattr(src, "check_missing"):
                        src.check_missing()
                self.timers["positions"] = now + POSITION_SAVE_INTERVAL
            elif name == "whitelist":
                self.timers["whitelist"] = now + WHITELIST_CHECK_INTERVAL
                if self._mtime(self.cfg.bans.whitelist) != self.whitelist_mtime:
                    self.reload_whitelist()
            elif name == "repair":
                del self.timers["repair"]
                self._repair()
            elif name == "storesync":
                del self.timers["storesync"]
                self._resync_store()
            elif name == "mapcheck":
                self.timers["mapcheck"] = now + MAP_CHECK_INTERVAL
                self._check_map()
            elif name == "fwcheck":
                took = self._check_firewall()
                # Reading 100,000 rules back takes seconds: keep the check under 1/20 of the time.
                self.timers["fwcheck"] = self.clock() + max(self.cfg.firewall.check_interval,
                                                            FWCHECK_DUTY * took)
            elif name == "watchdog":
                self._run_watchdog(now)
                self._schedule_watchdog(self.clock())
            elif name == "sd_watchdog":
                sd_notify("WATCHDOG=1")
                self.timers["sd_watchdog"] = now + self.sd_interval
            elif name == "poll":
                for src in self.sources:
                    if src.fileno() is None:
                        self._pump(src)
                self.timers["poll"] = now + self.cfg.sources.poll_interval
            elif name == "control":
                if self.control is not None:
                    self.control.expire_idle(now)
        self._schedule_engine()
        self._schedule_control()

    def _schedule_control(self) -> None:
        """Idle control clients are closed (64 idle connections would lock everyone out)."""
        deadline = None if self.control is None else self.control.next_deadline()
        if deadline is None:
            self.timers.pop("control", None)
        else:
            self.timers["control"] = deadline

    # -- the data path --------------------------------------------------------------

    def _pump(self, src: Any) -> None:
        # A reload may have replaced the sources while a stale ready fd of the same select()
        # batch is still queued: a closed source must not be read again.
        if src not in self.sources:
            return
        try:
            src.process()
        except Exception as exc:   # a source failing must not kill the daemon
            self.error(f"source {type(src).__name__}: {exc}")
            log.exception("action=source-error")
        self._sync_fd(src)
        if getattr(src, "eof", False) and all(getattr(s, "eof", False) for s in self.sources):
            # A syslog daemon piping into us (rsyslog omprog) closes the pipe to stop us,
            # and starts a new logwatchd when it comes back: end cleanly, state saved.
            log.info("action=stop reason=end-of-input")
            self.stopping = True

    def on_chunk(self, source: str, chunk: bytes) -> None:
        """Called by the sources with whole lines: parse, feed the engine, apply the effects."""
        events = self.parser.parse(chunk)
        # The sources' positions already include this chunk: committing them in the same
        # transaction as its effects makes a kill -9 neither lose nor replay an action. A
        # chunk without effects commits nothing (the 1 s timer saves the positions): replaying
        # it after a crash changes nothing, and most wakeups bring no effect at all.
        self.feed(events, positions=True)

    def feed(self, events: Sequence[Event], positions: bool = False) -> None:
        effects: list[Effect] = []
        handle = self.engine.handle
        for ev in events:
            self.counters.events[ev.kind] += 1
            effects.extend(handle(ev))
        if events:
            self._note_newest(events[-1])
        self._apply(effects, positions=positions)

    def _note_newest(self, event: Event) -> None:
        """Track the newest log time for `lag`; a line dated in the future beyond the clock
        skew (a bogus 2099) is not believed, or it would pin the lag at 0 for good."""
        from logwatch.engine.core import LOG_CLOCK_SKEW

        try:
            newest = event.time.timestamp()
        except (AttributeError, ValueError, OverflowError, OSError):
            return
        if newest > self.clock() + LOG_CLOCK_SKEW:
            return          # the engine counts it (time_future)
        if self.counters.newest_event is None or newest > self.counters.newest_event:
            self.counters.newest_event = newest

    def _apply(self, effects: Iterable[Effect], positions: bool = False) -> None:
        """Hand one batch of effects to the effectors, then persist it in one transaction."""
        effects = list(effects)
        if not effects:
            return
        now = self.clock()
        grants: dict[str, Grant] = {}
        revoked: dict[str, str] = {}
        new_map: list[str] = []
        bans: dict[str, Ban] = {}
        lifted: dict[str, str] = {}
        for eff in effects:
            if isinstance(eff, GrantAdded):
                grants[eff.grant.ip] = eff.grant
                revoked.pop(eff.grant.ip, None)
                if not eff.refreshed:
                    new_map.append(eff.grant.ip)
            elif isinstance(eff, GrantRevoked):
                revoked[eff.ip] = eff.why
                grants.pop(eff.ip, None)
            elif isinstance(eff, BanAdded):
                bans[eff.ban.net] = eff.ban
                lifted.pop(eff.ban.net, None)
            elif isinstance(eff, BanLifted):
                lifted[eff.net] = eff.why
                bans.pop(eff.net, None)
        if self.relay_map is not None:
            self._effect("relaymap", lambda: self.relay_map.remove(list(revoked)) if revoked else None)
            adds = [ip for ip in new_map if ip in grants]
            self._effect("relaymap", lambda: self.relay_map.add(adds) if adds else None)
        if self.firewall is not None:
            self._effect("firewall", lambda: self.firewall.unban(list(lifted)) if lifted else None)
            self._effect("firewall",
                         lambda: self.firewall.ban(list(bans.values())) if bans else None)
        self._persist(grants, revoked, bans, lifted, positions)
        self._log_actions(grants, new_map, revoked, bans, lifted, now)

    def _effect(self, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as exc:   # the store keeps the truth; reconcile repairs the kernel/map
            self.error(f"{what}: {exc}")
            log.error("action=%s-error error=%s", what, exc)
            self._schedule_repair()

    def _schedule_repair(self) -> None:
        """After a failed firewall or map write: reconcile soon, backing off while it fails.
        Until then the engine takes the IP for banned (or granted) and the kernel does not."""
        if "repair" not in self.timers:
            self.timers["repair"] = self.clock() + self.repair_delay

    def _repair(self) -> None:
        try:
            self._reconcile()
        except Exception as exc:
            self.repair_delay = min(self.repair_delay * 2, REPAIR_MAX_DELAY)
            self.error(f"repair: {exc}")
            log.error("action=repair result=failed retry_in=%.0f error=%s", self.repair_delay, exc)
            self._schedule_repair()
            return
        self.repair_delay = REPAIR_DELAY
        log.info("action=repair result=ok grants=%d bans=%d", len(self.engine.grants),
                 len(self.engine.bans))

    def _store_failed(self) -> None:
        """A commit failed: the engine is ahead of the store until a resync succeeds."""
        self.store_dirty = True
        self.store.positions_held = True
        if "storesync" not in self.timers:
            self.timers["storesync"] = self.clock() + self.store_retry_delay

    def _resync_store(self) -> bool:
        """Write the changes the store lacks, then the positions, in one transaction."""
        self.store.positions_held = False
        try:
            with self.store.transaction():
                self.pending.write(self.store, self.engine.offender_rows)
                self.store.write_held_cursors()
                for src in self.sources:
                    src.save_positions()
        except Exception as exc:
            self.store.positions_held = True
            self.store_retry_delay = min(self.store_retry_delay * 2, STORE_RETRY_MAX_DELAY)
            self.timers["storesync"] = self.clock() + self.store_retry_delay
            log.error("action=store-resync result=failed retry_in=%.0f error=%s",
                      self.store_retry_delay, exc)
            return False
        self.store_dirty = False
        self.pending = PendingWrites()
        self.store.held_cursors.clear()
        self.store_retry_delay = STORE_RETRY_DELAY
        log.info("action=store-resync result=ok grants=%d bans=%d", len(self.engine.grants),
                 len(self.engine.bans))
        return True

    def _persist(self, grants: dict[str, Grant], revoked: dict[str, str], bans: dict[str, Ban],
                 lifted: dict[str, str], positions: bool = False) -> None:
        if self.store_dirty:
            # Kept for the resync (on its timer); no position moves past this batch.
            self.pending.merge(grants, revoked, bans, lifted)
            return
        try:
            with self.store.transaction():
                if positions:
                    for src in self.sources:
                        src.save_positions()
                if grants:
                    self.store.put_grants(grants.values())
                if revoked:
                    self.store.delete_grants(revoked)
                if bans:
                    self.store.put_bans(bans.values())
                if lifted:
                    self.store.delete_bans(lifted)
                if bans:
                    # Only the batch's nets: the whole history may hold 1M offenders.
                    self.store.put_offenders(self.engine.offender_rows(list(bans)))
        except Exception as exc:
            self.error(f"store: {exc}")
            log.error("action=store-error error=%s (positions held back until it is written)",
                      exc)
            self.pending.merge(grants, revoked, bans, lifted)
            self._store_failed()

    def _log_actions(self, grants: dict[str, Grant], new_map: list[str], revoked: dict[str, str],
                     bans: dict[str, Ban], lifted: dict[str, str], now: float) -> None:
        dry = " dry_run=1" if self.dry_run else ""
        c = self.counters.actions
        fresh = set(new_map)
        for ip, g in grants.items():
            action = "grant" if ip in fresh else "refresh"
            c[action] += 1
            if action == "grant":
                log.info("action=grant ip=%s user=%s service=%s expires=%d%s",
                         ip, g.user, g.service, g.expires_at, dry)
            self.actions.write(action, now, ip=ip, user=g.user, service=g.service,
                               expires=int(g.expires_at))
        for ip, why in revoked.items():
            c["revoke"] += 1
            log.info("action=revoke ip=%s why=%s%s", ip, why, dry)
            self.actions.write("revoke", now, ip=ip, reason=why)
        for net, b in bans.items():
            c["ban"] += 1
            duration = "permanent" if b.expires_at is None else f"{b.expires_at - b.since:.0f}"
            reason = _reason_text(b.reason) or b.source
            if "prefix-fallback" in b.reason:
                # The offender network holds a protected address: say so, never silently.
                log.warning("action=ban-prefix-fallback ip=%s configured_prefix=/%s "
                            "why=protected-address-in-prefix", net, b.reason["prefix-fallback"])
            log.info("action=ban ip=%s reason=%s score=%g duration=%s offences=%d source=%s%s",
                     net, reason, b.score, duration, b.offences, b.source, dry)
            self.actions.write("ban", now, ip=net, reason=reason, score=f"{b.score:g}",
                               duration=duration, offences=b.offences, source=b.source)
        for net, why in lifted.items():
            c["unban"] += 1
            log.info("action=unban ip=%s why=%s%s", net, why, dry)
            self.actions.write("unban", now, ip=net, reason=why)

    def _run_watchdog(self, now: float) -> None:
        try:
            reports = self.watchdog.run_once()   # never blocks: SIGKILLs come on a later run
        except Exception as exc:
            self.error(f"watchdog: {exc}")
            log.exception("action=watchdog-error")
            return
        events = []
        for rep in reports:
            if rep.signal is not None or rep.outcome == "dry-run":
                self.actions.write("kill", now, pid=rep.pid, ip=rep.ip, age=f"{rep.age:.0f}",
                                   signal=rep.signal, outcome=rep.outcome, title=rep.title)
            ev = self.watchdog.to_event(rep)
            if ev is not None:
                events.append(ev)
        if events:
            self.feed(events)

    def _check_map(self) -> None:
        """Someone deleted or damaged the map: rebuild it from the live grants."""
        if self.relay_map is None:
            return
        try:
            if self.relay_map.check():
                return
            log.warning("action=relay-map-repair map=%s grants=%d", self.cfg.relay.map,
                        len(self.engine.grants))
            self.relay_map.rebuild(list(self.engine.grants))
        except Exception as exc:
            self.error(f"relaymap check: {exc}")
            log.error("action=relaymap-error error=%s", exc)

    def _check_firewall(self) -> float:
        """Someone flushed or edited our chain/sets/table: put the engine's bans back.
        Returns the seconds the check took."""
        if self.firewall is None:
            return 0.0
        from logwatch.effectors.firewall import drift

        started = time.monotonic()
        bans = list(self.engine.bans.values())
        try:
            found = drift(self.firewall, bans, self.clock())
            if not found:
                return time.monotonic() - started
            log.warning("action=firewall-repair backend=%s drift=%s bans=%d",
                        self.firewall.backend, ",".join(found), len(bans))
            self.counters.actions["firewall-repair"] += 1
            self.firewall.setup()
            self.firewall.reconcile(bans, self.clock())
        except Exception as exc:
            self.error(f"firewall check: {exc}")
            log.error("action=firewall-error error=%s", exc)
            self._schedule_repair()
        return time.monotonic() - started

    def _retire_firewall(self) -> None:
        """Remove what an earlier run or config created in the kernel under another backend or
        other names (kept in the store), before ours is set up: both may share a name."""
        if self.dry_run:
            return                       # a dry run changes nothing, and remembers nothing
        from logwatch.effectors.firewall import firewall_identity, old_firewall

        current = firewall_identity(self.cfg, self.dry_run)
        stored = self.store.get_firewall_identity()
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
            self.store.set_firewall_identity(current)

    def _save_positions(self) -> None:
        if self.store_dirty:
            return     # the positions are written with the resync, never ahead of it
        try:
            with self.store.transaction():
                for src in self.sources:
                    src.save_positions()
        except Exception as exc:
            self.error(f"positions: {exc}")
            log.error("action=positions-error error=%s", exc)

    def error(self, message: str) -> None:
        self.counters.errors.append({"time": self.clock(), "message": message})

    # -- reload -------------------------------------------------------------------

    def reload(self) -> tuple[bool, str]:
        """Reload config, rules and whitelist; on any error keep everything as it was."""
        path = self.config_path
        try:
            # Only the absent default file means "built-in defaults"; a named file must exist.
            # An empty file (truncated mid-save) is refused: it would switch to the defaults.
            cfg = load_config(path or DEFAULT_CONFIG_PATH, missing_ok=path is None,
                              empty_ok=False)
            cfg = apply_overrides(cfg, self.args)
            parser = self._load_parser(cfg)
            whitelist = self._load_whitelist(cfg)
        except Exception as exc:
            msg = str(exc).replace("\n", "; ")
            log.error("action=reload result=rejected error=%s (keeping the running config)", msg)
            self.error(f"reload rejected: {msg}")
            return False, f"reload rejected, old config kept: {msg}"
        old = self.cfg
        old_whitelist_path = old.bans.whitelist
        self.cfg = cfg
        self.dry_run = cfg.daemon.dry_run
        # The counters in `status` stay monotonic: the new parser continues the old one's.
        parser.stats = self.parser.stats
        self.parser = parser
        self.whitelist = whitelist
        if cfg.bans.whitelist != old_whitelist_path:
            self._watch_whitelist(cfg.bans.whitelist)
        self._apply(self.engine.reconfigure(cfg.relay, cfg.bans, mynetworks=mynetworks(cfg)))
        self._apply(self.engine.set_whitelist(whitelist))
        self.actions.close()
        self.actions = ActionLog(cfg.daemon.actions_log)
        dry_changed = old.daemon.dry_run != cfg.daemon.dry_run
        old_relay_map = self.relay_map
        try:
            if (old.firewall != cfg.firewall or old.relay != cfg.relay
                    or old.bans.enabled != cfg.bans.enabled or dry_changed):
                self._make_effectors(cfg)
            # A firewall that moved away (backend, names) is removed by _reconcile, from the
            # identity kept in the store: the same path as at start.
            if (old_relay_map is not None and self.relay_map is not old_relay_map
                    and (self.relay_map is None or old.relay.map != cfg.relay.map)):
                # Postfix may still use the old map: empty it rather than leave it granting
                # relay to addresses whose grants nobody will ever revoke there.
                self._effect("relaymap", lambda: old_relay_map.rebuild([]))
                log.info("action=relay-map-emptied map=%s", old.relay.map)
            self._reconcile()
        except Exception as exc:
            self.error(f"reload reconcile: {exc}")
            log.error("action=reconcile-error error=%s", exc)
            self._schedule_repair()
        if old.watchdog != cfg.watchdog or dry_changed:
            if self.watchdog is not None:
                self.watchdog.close()
            self.watchdog = self._make_watchdog(cfg)
            self._schedule_watchdog(self.clock())
        for key in ("socket", "state_dir", "pidfile", "log"):
            if getattr(old.daemon, key) != getattr(cfg.daemon, key):
                log.warning("action=reload-ignored key=daemon.%s reason=needs-a-restart", key)
        if old.sources != cfg.sources:
            self._save_positions()
            try:
                new_sources = self._make_sources(cfg)
            except Exception as exc:
                self.error(f"reload sources: {exc}")
                log.error("action=reload-sources-error error=%s (keeping the old sources)", exc)
            else:
                self._unregister_sources()
                for src in self.sources:
                    src.close()
                self.sources = new_sources
                self._register_sources()
        self._schedule_engine()
        self.counters.reloads += 1
        log.info("action=reload result=ok config=%s rules=%d grants=%d bans=%d",
                 path or "(defaults)", len(parser.ruleset), len(self.engine.grants),
                 len(self.engine.bans))
        return True, "reloaded"

    def _watch_whitelist(self, path: str | None) -> None:
        """Re-read the whitelist as soon as it changes (inotify; an mtime timer without it)."""
        if self.whitelist_watch is not None:
            fd = self.whitelist_watch.fileno()
            if fd is not None:
                self.selector.unregister(fd)
            self.whitelist_watch.close()
            self.whitelist_watch = None
        if not path:
            return
        self.whitelist_watch = watch = FileWatch(path)
        fd = watch.fileno()
        if fd is None:
            self.timers["whitelist"] = self.clock() + WHITELIST_CHECK_INTERVAL
        else:
            self.timers.pop("whitelist", None)
            self.selector.register(fd, selectors.EVENT_READ,
                                   lambda _mask: watch.changed() and self.reload_whitelist())

    def reload_whitelist(self) -> None:
        """The whitelist file changed: re-read it; a now-whitelisted ban is lifted."""
        try:
            whitelist = self._load_whitelist(self.cfg)
        except Exception as exc:
            self.error(f"whitelist: {exc}")
            log.error("action=whitelist-error error=%s", exc)
            return
        self.whitelist = whitelist
        self._apply(self.engine.set_whitelist(whitelist))
        log.info("action=whitelist-reload path=%s", self.cfg.bans.whitelist)

    # -- status and control ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock()
        c = self.counters
        files: list[dict[str, Any]] = []
        skipped = 0
        for src in self.sources:
            offsets = {}
            if hasattr(src, "positions"):
                offsets = {p.path: p for p in src.positions()}
            for name, st in src.stats().items():
                skipped += int(st.get("skipped_long", 0) or 0)
                entry: dict[str, Any] = {"path": name, **st}
                pos = offsets.get(os.path.abspath(name)) if name.startswith("/") else None
                if pos is not None:
                    entry.update(offset=pos.offset, inode=pos.inode)
                files.append(entry)
        pstats = self.parser.stats
        self.lag.update(now, self.sources)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": now - c.started,
            "started": c.started,
            "config": self.config_path,
            "dry_run": self.dry_run,
            "lines_read": pstats.lines,
            "lines_skipped": skipped,
            "lines_unparsed": pstats.unknown_framing,
            "lines_too_long": pstats.too_long,
            "rules_over_budget": dict(pstats.over_budget),
            "rules_quarantined": self.parser.quarantine_left(),
            "matcher": f"{self.parser.matcher.name} ({self.parser.matcher.passes} "
                       f"pass{'es' if self.parser.matcher.passes != 1 else ''})",
            "events": dict(c.events),
            "actions": dict(c.actions),
            "grants": len(self.engine.grants),
            "bans": len(self.engine.bans),
            "files": files,
            "newest_event": c.newest_event,
            "lag": self.lag.lag(now),
            "lag_bytes": self.lag.behind,
            "log_time": self.engine.log_time_counts(),
            "watchdog_kills": (self.watchdog.stats().get("kills", 0)
                               if self.watchdog is not None else None),
            "reloads": c.reloads,
            "errors": list(c.errors),
        }

    def summary(self) -> str:
        st = self.status()
        events = ",".join(f"{k}:{v}" for k, v in sorted(st["events"].items())) or "none"
        return (f"action=summary uptime={st['uptime']:.0f} lines_read={st['lines_read']} "
                f"events={events} grants={st['grants']} bans={st['bans']} "
                f"lag={'-' if st['lag'] is None else format(st['lag'], '.1f')} "
                f"errors={len(st['errors'])}")

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request -> one response."""
        cmd = req["cmd"]
        now = self.clock()
        if cmd == "status":
            return {"ok": True, **self.status()}
        if cmd == "bans":
            return {"ok": True, "bans": [
                {"ip": b.net, "reason": _reason_text(b.reason) or b.source,
                 "score": b.score, "since": b.since, "expires": b.expires_at,
                 "offences": b.offences, "source": b.source}
                for b in sorted(self.engine.bans.values(), key=lambda b: b.since)]}
        if cmd == "grants":
            return {"ok": True, "grants": [
                {"ip": g.ip, "reason": f"{g.service or '?'} login {g.user or '?'}",
                 "user": g.user, "service": g.service, "since": g.granted_at,
                 "expires": g.expires_at}
                for g in sorted(self.engine.grants.values(), key=lambda g: g.granted_at)]}
        if cmd == "reload":
            ok, msg = self.reload()
            return {"ok": ok, "message": msg} if ok else {"ok": False, "error": msg}
        if cmd == "flush":
            effects = list(self.engine.flush())
            self._apply(effects)
            return {"ok": True, "message": f"flushed: {len(effects)} ban(s) lifted"}
        if cmd in ("ban", "unban", "grant", "revoke"):
            raw = req.get("ip")
            if not isinstance(raw, str):
                return {"ok": False, "error": f"{cmd}: an \"ip\" string is required"}
            duration = req.get("for")
            if duration is not None:
                try:
                    duration = parse_duration(duration)     # bounded: ten years at most
                except ValueError as exc:
                    return {"ok": False, "error": f"{cmd}: \"for\" {exc}"}
            return self._manual(cmd, raw, duration, now)
        if cmd in ("offenders", "check"):
            return answer_query(self.engine, req)
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _manual(self, cmd: str, raw: str, duration: float | None, now: float) -> dict[str, Any]:
        if cmd in ("grant", "revoke"):
            ip = normalize_ip(raw)
            if ip is None:
                return {"ok": False, "error": f"{cmd}: not an IP address: {raw!r}"}
        else:
            ip = raw
        refused = check_grant(ip) if cmd == "grant" else check_ban(ip) if cmd == "ban" else None
        if refused:
            return {"ok": False, "error": f"{cmd}: {refused}"}
        try:
            if cmd == "ban":
                effects = self.engine.ban(ip, duration)
            elif cmd == "unban":
                effects = self.engine.unban(ip)
            elif cmd == "grant":
                effects = self.engine.grant(ip, duration)
            else:
                effects = self.engine.revoke(ip)
        except ValueError as exc:
            return {"ok": False, "error": f"{cmd}: {exc}"}
        effects = list(effects)
        if not effects:
            what = {"ban": "not banned", "unban": "not banned",
                    "grant": "not granted", "revoke": "no grant to revoke"}[cmd]
            return {"ok": False, "error": f"{cmd}: {raw}: {what}"}
        self._apply(effects)
        self._schedule_engine()
        return {"ok": True, "message": f"{cmd} {raw}: done"}

    # -- the loop -------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
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
                now = self.clock()
                nxt = min(self.timers.values(), default=now + 60.0)
                timeout = max(0.0, min(nxt - now, 60.0))
                # A regular file on stdin has no fd to wait on: it is read a chunk per turn.
                busy = [src for src in self.sources if getattr(src, "pending", False)]
                try:
                    ready = self.selector.select(0.0 if busy else timeout)
                except InterruptedError:
                    ready = []
                for key, mask in ready:
                    key.data(mask)
                    if self.pending_signals:
                        break
                for src in busy:
                    if not self.pending_signals:
                        self._pump(src)
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
        if self.store_dirty:
            self._resync_store()
        self._save_positions()
        try:
            if not self.store_dirty:
                self.store.put_offenders(self.engine.offender_rows())
        except Exception as exc:
            log.error("action=store-error error=%s", exc)
        if self.watchdog is not None:
            self.watchdog.close()
        self._watch_whitelist(None)
        for src in self.sources:
            try:
                src.close()
            except Exception as exc:
                log.error("action=source-close-error error=%s", exc)
        if self.control is not None:
            self.control.close()
        if self.firewall is not None and self.cfg.firewall.flush_on_stop:
            self._effect("firewall", self.firewall.flush)
        self.actions.close()
        self.store.close()
        if self.state_lock is not None:
            self.state_lock.release()
        log.info("action=stopped grants=%d bans=%d", len(self.engine.grants),
                 len(self.engine.bans))


def effective_rules_dirs(cfg: Config) -> list[str]:
    """rules.dirs; the default share dir falls back to a source tree's rules/ when absent."""
    dirs = list(cfg.rules.dirs)
    if dirs == [DEFAULT_RULES_DIR] and not os.path.isdir(DEFAULT_RULES_DIR):
        from logwatch.parsing.rules import default_rules_dirs

        dirs = [str(p) for p in default_rules_dirs()]
    return dirs


# -- host facts ---------------------------------------------------------------------------

def mynetworks(cfg: Config) -> list[str]:
    """relay.mynetworks, or Postfix's own `postconf -h mynetworks` (never granted or banned)."""
    if cfg.relay.mynetworks is not None:
        return list(cfg.relay.mynetworks)
    from logwatch.effectors.postfixconf import read_mynetworks

    return read_mynetworks() or []


def own_addresses() -> list[str]:
    """The host's own addresses: never banned."""
    import psutil

    addrs = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            ip = normalize_ip(entry.address.split("%", 1)[0])
            if ip is not None:
                addrs.append(ip)
    return addrs


# -- process setup ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logwatchd",
        description="Watch mail logs: let IPs relay after a POP/IMAP login (pop-before-smtp), "
                    "ban SMTP username guessers at the firewall, kill stuck sendmail sessions.",
        epilog="Signals: HUP reloads config, rules and whitelist; TERM/INT save state and stop; "
               "USR1 logs a state summary. Flags override the config file.",
    )
    a = p.add_argument
    a("--version", action="version", version=f"logwatchd {__version__}")
    a("--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH}; "
      "built-in defaults if the default file is absent)")
    a("--logfile", metavar="FILE", action="append", help="log file to follow (repeatable)")
    a("--state-dir", metavar="DIR", help="state directory holding state.db")
    a("--relay-map", metavar="TYPE:PATH", help="Postfix relay map, e.g. hash:/etc/postfix/pop-before-smtp")
    a("--grace", type=duration_arg, metavar="DURATION", help="relay grant duration after a login")
    a("--firewall", choices=FIREWALLS.names(), help="firewall backend")
    a("--chain", metavar="NAME", help="iptables chain name")
    a("--ports", metavar="LIST", help="comma-separated TCP ports to block, e.g. 25,465,587")
    a("--maxretry", type=float, metavar="N", help="score that triggers a ban")
    a("--findtime", type=duration_arg, metavar="DURATION", help="scoring window")
    a("--bantime", type=duration_arg, metavar="DURATION", help="first ban duration")
    a("--whitelist", metavar="FILE", help="whitelist file")
    a("--watchdog-limit", type=duration_or_zero_arg, metavar="DURATION", help="sendmail cmd-read limit (0 disables)")
    a("--socket", metavar="PATH", help="control socket path")
    a("--rules", metavar="DIR", action="append", help="rules directory (repeatable)")
    a("--dry-run", action="store_true", help="change nothing in firewall or map; log instead")
    a("--from-start", action="store_true", help="read never-seen log files from their start")
    a("--stdin", action="store_true", help="read log lines from standard input")
    a("--foreground", action="store_true", help="stay in the foreground (the default)")
    a("--daemonize", action="store_true", help="fork into the background, write --pidfile")
    a("--pidfile", metavar="FILE", help="pid file (written with --daemonize or when given)")
    a("--actions-log", metavar="FILE", help="LTSV actions log ('none' disables)")
    a("--reset-state", action="store_true",
      help="start with no grants or bans: discard the saved ones and, with a new or empty "
           "state.db, remove the firewall's and map's entries instead of adopting them")
    a("--log", choices=("syslog", "stderr"), help="where to log (default syslog)")
    a("--debug", action="store_true", help="log debug messages too")
    return p


def setup_logging(target: str, debug: bool = False) -> None:
    root = logging.getLogger("logwatchd")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    handler: logging.Handler
    if target == "syslog" and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("logwatchd[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s logwatchd[%(process)d]: %(levelname)s %(message)s"))
    root.addHandler(handler)
    if target == "syslog" and not os.path.exists("/dev/log"):
        root.warning("action=log-fallback reason=no-/dev/log target=stderr")


def write_pidfile(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path) as fh:
            old = int(fh.read().strip() or 0)
        if old and old != os.getpid():
            os.kill(old, 0)
            raise StartupError(f"{path}: logwatchd already running with pid {old}")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    except PermissionError as exc:
        if exc.errno == errno.EPERM:
            raise StartupError(f"{path}: pid {old} is alive") from exc
        raise
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def daemonize() -> int:
    """Double fork, detached from terminal and session; the caller's process waits until the
    daemon reports (through the returned pipe fd) that it started, and exits 0 or 1 with it."""
    rfd, wfd = os.pipe()
    if os.fork():
        os.close(wfd)
        with os.fdopen(rfd, "rb") as pipe:
            answer = pipe.read()
        if answer == b"ok":
            os._exit(0)
        sys.stderr.write(f"logwatchd: cannot start: {answer.decode(errors='replace')}\n"
                         if answer else "logwatchd: the daemon died while starting\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
    return wfd


def _report_start(fd: int | None, message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode())
        os.close(fd)
    except OSError:
        pass


def load_effective_config(args: argparse.Namespace) -> tuple[Config, str | None]:
    """Config file (if any) plus flags; the default path may be absent, an explicit one not."""
    if args.config:
        cfg = load_config(args.config)
        path: str | None = os.path.abspath(args.config)
    else:
        cfg = load_config(DEFAULT_CONFIG_PATH, missing_ok=True)
        path = DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None
    return apply_overrides(cfg, args), path


def absolute_args(args: argparse.Namespace) -> None:
    """Make the path flags absolute once: a reload after --daemonize's chdir("/") re-applies
    them and would otherwise resolve them against "/"."""
    for attr in ("config", "state_dir", "socket", "pidfile", "whitelist"):
        if getattr(args, attr, None):
            setattr(args, attr, os.path.abspath(getattr(args, attr)))
    for attr in ("logfile", "rules"):
        if getattr(args, attr, None):
            setattr(args, attr, [os.path.abspath(p) for p in getattr(args, attr)])
    if args.actions_log and args.actions_log != "none":
        args.actions_log = os.path.abspath(args.actions_log)
    # --relay-map stays as given: a relative map path is refused, as in the config file.


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    absolute_args(args)
    try:
        cfg, path = load_effective_config(args)
    except ConfigError as exc:
        print(f"logwatchd: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.daemon.log, args.debug)
    if args.daemonize and cfg.sources.stdin:
        print("logwatchd: --daemonize and --stdin exclude each other", file=sys.stderr)
        return 2
    ready_fd = daemonize() if args.daemonize else None
    daemon = Daemon(cfg, path, args)
    try:
        if args.daemonize or args.pidfile:
            write_pidfile(cfg.daemon.pidfile)
        daemon.setup()
    except (StartupError, ConfigError, OSError, sqlite3.Error) as exc:
        log.error("action=startup-failed error=%s", exc)
        _report_start(ready_fd, str(exc))
        if cfg.daemon.log != "stderr" and not args.daemonize:
            print(f"logwatchd: cannot start: {exc}", file=sys.stderr)
        return 1
    _report_start(ready_fd, "ok")
    try:
        daemon.run()
    finally:
        if args.daemonize or args.pidfile:
            try:
                os.unlink(cfg.daemon.pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
