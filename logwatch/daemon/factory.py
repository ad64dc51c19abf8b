"""Builds the daemon's collaborators from a Config: parser, whitelist, engine, store, relay map,
firewall, watchdog, sources. The Daemon only wires what it is given (tests pass fakes)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logwatch.clock import Clock, wall
from logwatch.daemon.actionlog import ActionLog
from logwatch.daemon.config import DEFAULT_RULES_DIR, Config
from logwatch.parsing.events import normalize_ip
from logwatch.protocols import Firewall, RelayMap, Service, Source


class StartupError(Exception):
    """The daemon cannot start (bad config, unwritable state dir, busy socket...)."""


@dataclass
class Parts:
    """The collaborators the daemon wires together; any may be a fake in a test."""

    store: Any = None
    engine: Any = None
    parser: Any = None
    whitelist: Any = None
    relay_map: RelayMap | None = None
    firewall: Firewall | None = None
    watchdog: Any = None
    sources: list[Source] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    actions: ActionLog = field(default_factory=lambda: ActionLog(None))
    suspension_table: Any = None      # daemon/suspensions.py SuspensionTable (accounting on)
    accounting: Any = None        # daemon/accounting.py Accounting (accounting.enabled)


def effective_rules_dirs(cfg: Config) -> list[str]:
    """rules.dirs; the default share dir falls back to a source tree's rules/ when absent."""
    dirs = list(cfg.rules.dirs)
    if dirs == [DEFAULT_RULES_DIR] and not os.path.isdir(DEFAULT_RULES_DIR):
        from logwatch.parsing.rules import default_rules_dirs

        dirs = [str(p) for p in default_rules_dirs()]
    return dirs


def load_parser(cfg: Config, clock: Clock, on_quarantine: Callable[[str], None]) -> Any:
    """The parser of the configured rules; a rule over the time budget is reported."""
    from logwatch.parsing.parser import Parser
    from logwatch.parsing.rules import load_ruleset

    ruleset = load_ruleset(effective_rules_dirs(cfg), cfg.rules.local_dir)
    parser = Parser(ruleset, clock=clock, matcher=cfg.rules.matcher)
    parser.on_quarantine = on_quarantine      # a rule over the time budget shows in status
    return parser


def load_whitelist(cfg: Config, log: logging.Logger) -> Any:
    """The whitelist file (bad lines are skipped with a warning, the rest applies)."""
    from logwatch.engine.whitelist import Whitelist

    path = cfg.bans.whitelist
    if not path:
        return Whitelist()
    wl, warnings = Whitelist.from_file(path)
    for warning in warnings:
        log.warning("action=whitelist-warning %s", warning)
    return wl


def file_mtime(path: str | None) -> int | None:
    """st_mtime_ns of path, None when absent or unreadable."""
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def make_engine(cfg: Config, whitelist: Any, clock: Clock) -> Any:
    from logwatch.engine.core import Engine

    return Engine(cfg.relay, cfg.bans, whitelist=whitelist, mynetworks=mynetworks(cfg),
                  own_addresses=own_addresses(), clock=clock,
                  accounting=cfg.accounting if cfg.accounting.enabled else None)


def make_suspension_table(cfg: Config, dry_run: bool,
                          set_entries: Callable[[str, Any], Any] | None = None) -> Any:
    """The check_sasl_access writer of suspended IDs (accounting enabled), or None;
    set_entries: the daemon's entry point of the policy service's table, used when
    policy.sasl_access_map is accounting.sasl_access_map (else a table of its own)."""
    if not cfg.accounting.enabled:
        return None
    from logwatch.daemon.suspensions import SaslContributors, SuspensionTable
    from logwatch.effectors.saslaccess import SaslAccessTable

    if set_entries is None or cfg.policy.sasl_access_map != cfg.accounting.sasl_access_map:
        # A table of our own; the same file as the policy service's: its table, shared.
        table = SaslAccessTable(cfg.accounting.sasl_access_map, dry_run=dry_run,
                                log=logging.getLogger("logwatchd.saslaccess"))
        set_entries = SaslContributors(table).set
    return SuspensionTable(set_entries, cfg.accounting.suspend_action)


def make_effectors(cfg: Config, dry_run: bool,
                   clock: Clock = wall) -> tuple[Firewall | None, RelayMap | None]:
    """The firewall (bans enabled) and the relay map (relay enabled)."""
    from logwatch.effectors.firewall import make_firewall
    from logwatch.effectors.relaymap import open_relay_map

    flog = logging.getLogger("logwatchd.firewall")
    rlog = logging.getLogger("logwatchd.relaymap")
    firewall = (make_firewall(cfg.firewall, dry_run=dry_run, log=flog, clock=clock)
                if cfg.bans.enabled else None)
    relay_map = (open_relay_map(cfg.relay.map, value=cfg.relay.value,
                                text_file=cfg.relay.text_file, dry_run=dry_run, log=rlog)
                 if cfg.relay.enabled else None)
    return firewall, relay_map


def make_watchdog(cfg: Config, dry_run: bool, clock: Clock) -> Any:
    if not cfg.watchdog.enabled or cfg.watchdog.limit <= 0:
        return None
    from logwatch.effectors.watchdog import Watchdog

    return Watchdog(cfg.watchdog, dry_run=dry_run,
                    log=logging.getLogger("logwatchd.watchdog"), clock=clock)


def make_sources(cfg: Config, on_chunk: Callable[[str, bytes], None], store: Any) -> list[Any]:
    """The configured log sources (the SOURCES registry), each calling on_chunk with whole
    lines."""
    from logwatch.sources import SourceContext, build_sources

    return build_sources(cfg.sources, SourceContext(on_chunk, store))


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


def store_url(cfg: Config) -> str:
    """store.url, or the SQLite file in daemon.state_dir."""
    return cfg.store.url or "sqlite://" + os.path.join(cfg.daemon.state_dir, "state.db")


def node_name(cfg: Config) -> str:
    """store.node, or the host name (its first label)."""
    import socket

    return cfg.store.node or socket.gethostname().split(".", 1)[0] or "localhost"


def open_state(cfg: Config, reset: bool, log: logging.Logger) -> tuple[Any, Any, tuple]:
    """Lock the state directory, open the store, read the saved grants, bans and history:
    (lock, store, (grants, bans, offenders))."""
    import sqlite3

    from logwatch.daemon.hints import access_hint
    from logwatch.state.lock import StateLock, StateLockError
    from logwatch.state.store import Store, StoreError

    state_dir, url, node = cfg.daemon.state_dir, store_url(cfg), node_name(cfg)
    store = None
    try:
        os.makedirs(state_dir, exist_ok=True)
        # Before anything else: a second instance must not touch the map or the firewall.
        lock = StateLock(state_dir)
        lock.acquire()
        started = time.monotonic()
        store = Store(url=url, node=node)
        if reset:
            store.replace_state([], [], [])
            log.warning("action=reset-state store=%s (saved grants and bans discarded)",
                        store.path)
        saved = (store.load_grants(), store.load_bans(), store.load_offenders())
        log.info("action=store-open store=%s node=%s grants=%d bans=%d seconds=%.3f",
                 store.path, node or "-", len(saved[0]), len(saved[1]),
                 time.monotonic() - started)
        return lock, store, saved
    except sqlite3.Error as exc:   # a corrupt page shows only when it is read
        path = store.path if store is not None else url
        raise StartupError(f"state: {path}: {exc} (move it aside to start "
                           "afresh: live bans and grants are then adopted)") from exc
    except (OSError, StoreError, StateLockError) as exc:
        in_use = isinstance(exc, StateLockError) and not isinstance(exc.__cause__, OSError)
        hint = "" if in_use else access_hint(state_dir, "daemon.state_dir (--state-dir)")
        raise StartupError(f"state: {exc}{hint}") from exc


def load_accounts(engine: Any, store: Any) -> list[Any]:
    """The saved suspensions, their history and the account windows into the engine; the
    suspensions that expired meanwhile come back as effects."""
    return engine.accounts.load(store.load_suspensions(), store.load_suspension_history(),
                                store.load_account_windows())
