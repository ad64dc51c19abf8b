"""SIGHUP / `logwatchctl reload`: a new config, rules and whitelist, or none of them.

The new config and parser are built first; any error there keeps everything as it was. Then
the engine is reconfigured, effectors and sources replaced only when their sections changed,
and the kernel and map reconciled (a firewall that moved away is retired from the identity in
the store, the same path as at start)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from logwatch.daemon import factory
from logwatch.daemon.actionlog import ActionLog
from logwatch.daemon.config import DEFAULT_CONFIG_PATH, Config, apply_overrides, load_config
from logwatch.parsing.rules import SelfTestError

if TYPE_CHECKING:
    from logwatch.daemon.app import Daemon

log = logging.getLogger("logwatchd.daemon")

RESTART_ONLY = ("socket", "state_dir", "pidfile", "log")
# The message correlation's keys: a new accounting process applies them ("enabled" needs a
# restart of the daemon); the others of accounting.* (account risk) apply at a reload.
ACCOUNTING_RESTART = ("enabled", "stats_log", "max_open", "max_age", "keep")


def reload(d: Daemon) -> tuple[bool, str]:
    """Reload config, rules and whitelist; on any error keep everything as it was."""
    path = d.config_path
    try:
        # Only the absent default file means "built-in defaults"; a named file must exist.
        # An empty file (truncated mid-save) is refused: it would switch to the defaults.
        cfg = load_config(path or DEFAULT_CONFIG_PATH, missing_ok=path is None, empty_ok=False)
        cfg = apply_overrides(cfg, d.args)
        parser = factory.load_parser(cfg, d.clock, d.error)
        whitelist = d.load_whitelist(cfg)
    except Exception as exc:
        if isinstance(exc, SelfTestError):
            d.counters.selftest_failures += exc.failures
        msg = str(exc).replace("\n", "; ")
        log.error("action=reload result=rejected error=%s (keeping the running config)", msg)
        d.error(f"reload rejected: {msg}")
        return False, f"reload rejected, old config kept: {msg}"
    old = d.cfg
    d.cfg = cfg
    # The counters in `status` stay monotonic: the new parser continues the old one's.
    parser.stats = d.parser.stats
    d.parser = parser
    d.whitelist = whitelist
    if cfg.bans.whitelist != old.bans.whitelist:
        d.whitelist_watch.follow(cfg.bans.whitelist)
    d.apply(d.engine.reconfigure(cfg.relay, cfg.bans, mynetworks=factory.mynetworks(cfg)))
    d.apply(d.engine.set_whitelist(whitelist))
    d.apply(d.engine.configure_accounting(cfg.accounting if cfg.accounting.enabled else None))
    d.actions.close()
    d.actions = ActionLog(cfg.daemon.actions_log)
    changed = [k for k in ACCOUNTING_RESTART
               if getattr(old.accounting, k) != getattr(cfg.accounting, k)]
    if d.accounting is not None:
        # The stats log reopened (logrotate) and the message rules reloaded in the accounting
        # process; a changed correlation or sources section: a new process (lossless).
        d.accounting.reload(cfg, bool(changed) or old.sources != cfg.sources)
    if "enabled" in changed:
        # The account risk keys (suspend_*, weights, window, never_suspend ...) apply now.
        log.warning("action=reload-ignored key=accounting.enabled reason=needs-a-restart")
    _effectors(d, old, cfg)
    _watchdog(d, old, cfg)
    try:
        d.policy.reconfigure(cfg, cfg.daemon.dry_run)
    except Exception as exc:
        d.error(f"reload policy: {exc}")
        log.error("action=reload-policy-error error=%s", exc)
    if old.policy.listen != cfg.policy.listen:
        log.warning("action=reload-ignored key=policy.listen reason=needs-a-restart")
    for key in RESTART_ONLY:
        if getattr(old.daemon, key) != getattr(cfg.daemon, key):
            log.warning("action=reload-ignored key=daemon.%s reason=needs-a-restart", key)
    for key in ("listen", "token"):      # the web listener is started once, like the socket
        if getattr(old.web, key) != getattr(cfg.web, key):
            log.warning("action=reload-ignored key=web.%s reason=needs-a-restart", key)
    for key in ("url", "node"):      # the store is opened once, at start
        if getattr(old.store, key) != getattr(cfg.store, key):
            log.warning("action=reload-ignored key=store.%s reason=needs-a-restart", key)
    if old.sources != cfg.sources:
        _sources(d, cfg)
    d.schedule_engine()
    d.counters.reloads += 1
    log.info("action=reload result=ok config=%s rules=%d grants=%d bans=%d",
             path or "(defaults)", len(parser.ruleset), len(d.engine.grants), len(d.engine.bans))
    return True, "reloaded"


def _effectors(d: Daemon, old: Config, cfg: Config) -> None:
    """New effectors when their sections changed; then the kernel and map := the state."""
    dry_changed = old.daemon.dry_run != cfg.daemon.dry_run
    old_relay_map = d.relay_map
    try:
        if (old.firewall != cfg.firewall or old.relay != cfg.relay
                or old.bans.enabled != cfg.bans.enabled or dry_changed):
            d.firewall, d.relay_map = factory.make_effectors(cfg, cfg.daemon.dry_run, d.clock)
        if (old.accounting != cfg.accounting or dry_changed
                or old.policy.sasl_access_map != cfg.policy.sasl_access_map):
            old_table = d.suspension_table
            d.suspension_table = factory.make_suspension_table(cfg, cfg.daemon.dry_run,
                                                               d.set_sasl_entries)
            if old_table is not None and (d.suspension_table is None or old.accounting
                                          .sasl_access_map != cfg.accounting.sasl_access_map):
                # Postfix may still look there: no suspension may stay that nobody lifts.
                d.effects.guarded("saslaccess", lambda: old_table.rebuild([]))
        if (old_relay_map is not None and d.relay_map is not old_relay_map
                and (d.relay_map is None or old.relay.map != cfg.relay.map)):
            # Postfix may still use the old map: empty it rather than leave it granting
            # relay to addresses whose grants nobody will ever revoke there.
            d.effects.guarded("relaymap", lambda: old_relay_map.rebuild([]))
            log.info("action=relay-map-emptied map=%s", old.relay.map)
        d.upkeep.reconcile()
    except Exception as exc:
        d.error(f"reload reconcile: {exc}")
        log.error("action=reconcile-error error=%s", exc)
        d.upkeep.schedule_repair()


def _watchdog(d: Daemon, old: Config, cfg: Config) -> None:
    if old.watchdog != cfg.watchdog or old.daemon.dry_run != cfg.daemon.dry_run:
        if d.watchdog is not None:
            d.watchdog.close()
        d.watchdog = factory.make_watchdog(cfg, cfg.daemon.dry_run, d.clock)
        d.watchdog_runs.schedule(d.clock())


def _sources(d: Daemon, cfg: Config) -> None:
    """New sources (positions saved first); the old ones stay if the new cannot open."""
    d.effects.save_positions()
    try:
        new_sources: list[Any] = d.make_sources(cfg)
    except Exception as exc:
        d.error(f"reload sources: {exc}")
        log.error("action=reload-sources-error error=%s (keeping the old sources)", exc)
        return
    d.fds.unregister()
    for src in d.sources:
        src.close()
    d.sources = new_sources
    d.fds.register()
