"""logwatchd's process: flags, logging, pidfile, daemonizing, then the Daemon's setup and run."""

from __future__ import annotations

import argparse
import errno
import logging
import logging.handlers
import os
import sqlite3
import sys

from logwatch import __version__
from logwatch.daemon.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
)
from logwatch.daemon.factory import StartupError
from logwatch.daemon.logbatch import BatchingHandler
from logwatch.effectors.firewall import FIREWALLS
from logwatch.util.duration import duration_arg, duration_or_zero_arg

log = logging.getLogger("logwatchd.daemon")


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
    a("--store", metavar="URL", help="state store: sqlite:///PATH (default "
      "DIR/state.db) or postgresql://... shared by several servers")
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
    a("--stats-log", metavar="FILE", help="per-message LTSV stats log of accounting ('none' disables)")
    a("--sasl-access-map", metavar="TYPE:PATH",
      help="check_sasl_access table of suspended SASL IDs, e.g. hash:/etc/postfix/logwatchd-sasl")
    a("--policy-listen", metavar="ADDR",
      help="Postfix policy service: unix:/PATH or inet:HOST:PORT (policy.listen)")
    a("--sasl-block-list", metavar="FILE",
      help="SASL IDs refused by the policy service, one a line (policy.sasl_block_list)")
    a("--web-listen", metavar="HOST:PORT",
      help="serve /metrics and the status page there (e.g. 127.0.0.1:9189; 'off' disables)")
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
    # The records of one batch of effects leave together at its end (logbatch.held()).
    root.addHandler(BatchingHandler(handler))
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
    for attr in ("config", "state_dir", "socket", "pidfile", "whitelist", "sasl_block_list"):
        if getattr(args, attr, None):
            setattr(args, attr, os.path.abspath(getattr(args, attr)))
    for attr in ("logfile", "rules"):
        if getattr(args, attr, None):
            setattr(args, attr, [os.path.abspath(p) for p in getattr(args, attr)])
    for attr in ("actions_log", "stats_log"):
        value = getattr(args, attr, None)
        if value and value != "none":
            setattr(args, attr, os.path.abspath(value))
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
    from logwatch.daemon.app import Daemon  # the wiring imports every component: lazily

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
