"""Configuration: typed sections with Debian defaults. (The YAML loader with file/line errors lives here too.)"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from logwatch.effectors.firewall import config_checks as firewall_checks
from logwatch.effectors.firewall import cross_problems as firewall_cross_problems
from logwatch.parsing.literalscan import MATCHERS, hyperscan_available
from logwatch.util.duration import parse_duration
from logwatch.util.safeio import CONFIG_MAX_BYTES, read_capped
from logwatch.util.yamlsrc import MAX_EXPANDED_NODES, expanded_size_ok

DEFAULT_CONFIG_PATH = "/etc/logwatchd/logwatchd.yaml"
DEFAULT_RULES_DIR = "/usr/share/logwatchd/rules"


@dataclass
class SourcesConfig:
    logfiles: list[str] = field(default_factory=lambda: ["/var/log/mail.log"])
    from_start: bool = False          # files never seen before: read from the beginning
    max_line: int = 65536             # longer lines are counted and skipped
    poll_interval: float = 1.0        # polling fallback when inotify is unavailable
    stdin: bool = False
    journal: bool = False
    journal_identifiers: list[str] = field(default_factory=list)  # SYSLOG_IDENTIFIER filters
    journal_units: list[str] = field(default_factory=list)        # _SYSTEMD_UNIT filters


@dataclass
class RulesConfig:
    dirs: list[str] = field(default_factory=lambda: [DEFAULT_RULES_DIR])
    local_dir: str | None = "/etc/logwatchd/rules.d"   # adds or overrides rules by id
    matcher: str = "auto"             # prefilter literal matcher: auto, hyperscan or re


@dataclass
class RelayConfig:
    enabled: bool = True
    map: str = "hash:/etc/postfix/pop-before-smtp"    # TYPE:PATH, Postfix notation (hash or lmdb)
    grace: float = 1800.0
    services: list[str] = field(default_factory=lambda: ["pop3", "imap"])
    smtp_auth: bool = False           # also grant on successful SMTP AUTH
    value: str = "OK"
    mynetworks: list[str] | None = None   # None: ask `postconf -h mynetworks`
    exclude: list[str] = field(default_factory=list)   # CIDRs never granted
    text_file: str | None = None      # optional plain-text copy of the grants


@dataclass
class BanConfig:
    enabled: bool = True
    weights: dict[str, float] = field(default_factory=lambda: {
        "user-unknown": 1, "auth-failed": 1, "login-failed": 1, "relay-denied": 2,
        "rejected": 0, "stuck-session": 1,
    })
    findtime: float = 600.0
    maxretry: float = 5
    bantime: float = 3600.0
    growth: float = 2.0               # a repeat offender's ban is multiplied by this ...
    max_bantime: float = 7 * 86400.0  # ... up to this cap
    permanent_after: int | None = None   # this many bans make the next one permanent
    distinct_users: int = 10          # this many different unknown users ...
    distinct_window: float = 86400.0  # ... within this window also ban
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    max_tracked: int = 1_000_000      # least-recently-seen offenders are evicted beyond this
    whitelist: str | None = "/etc/logwatchd/whitelist"


@dataclass
class FirewallConfig:
    backend: str = "iptables"         # iptables | ipset | nftables | none
    chain: str = "SPAM_UNAME_GUESSERS"
    ports: list[int] = field(default_factory=lambda: [25])
    ipset_v4: str = "logwatchd4"
    ipset_v6: str = "logwatchd6"
    ipset_maxelem: int = 1_048_576
    nft_table: str = "logwatchd"
    flush_on_stop: bool = False
    check_interval: float = 60.0      # seconds between checks of the kernel against the bans


@dataclass
class WatchdogConfig:
    enabled: bool = True
    limit: float = 3600.0             # seconds in "cmd read" before a kill; 0 disables
    interval: float = 60.0            # scan period (never more than limit / 2)
    grace: float = 10.0               # SIGTERM -> SIGKILL
    users: list[str] = field(default_factory=lambda: ["root", "smmta", "smmsp", "mail"])
    patterns: list[str] = field(default_factory=list)  # extra title regexes; defaults built in
    count_as_offence: bool = True


@dataclass
class DaemonConfig:
    state_dir: str = "/var/lib/logwatchd"
    socket: str = "/run/logwatchd/control.sock"
    pidfile: str = "/run/logwatchd/logwatchd.pid"
    log: str = "syslog"               # syslog | stderr
    actions_log: str | None = "/var/log/logwatchd/actions.log"
    dry_run: bool = False


@dataclass
class Config:
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    bans: BanConfig = field(default_factory=BanConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


# ---------------------------------------------------------------------------
# YAML loader: every error names the file, the line and the key.
# ---------------------------------------------------------------------------


SECTIONS: dict[str, type] = {
    "sources": SourcesConfig, "rules": RulesConfig, "relay": RelayConfig, "bans": BanConfig,
    "firewall": FirewallConfig, "watchdog": WatchdogConfig, "daemon": DaemonConfig,
}
MAP_TYPES = ("hash", "lmdb")
LOG_TARGETS = ("syslog", "stderr")
SERVICES = ("pop3", "imap", "smtp", "submission", "sieve", "managesieve")
_FAILURE_KINDS = (
    "user-unknown", "auth-failed", "login-failed", "relay-denied", "rejected", "stuck-session",
)


@dataclass
class ConfigProblem:
    """One error: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# -- value checks: each returns an error message or None ----------------------

def _positive(v: Any) -> str | None:
    # .inf/.nan are YAML floats: inf overflows int() later, nan compares false to everything.
    if not math.isfinite(v):
        return f"must be a finite number (got {v!r})"
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    if not math.isfinite(v):
        return f"must be a finite number (got {v!r})"
    return None if v >= 0 else "must not be negative"


def _one_of(choices: tuple[str, ...]) -> typing.Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)} (got {v!r})"
    return check


def _int_range(lo: int, hi: int) -> typing.Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if lo <= v <= hi else f"must be between {lo} and {hi} (got {v})"
    return check


def _abs_path(v: Any) -> str | None:
    return None if v.startswith("/") else f"must be an absolute path (got {v!r})"


def _abs_paths(v: Any) -> str | None:
    for p in v:
        if not p.startswith("/"):
            return f"must be absolute paths (got {p!r})"
    return None


def check_map_spec(v: str) -> str | None:
    """Validate a Postfix TYPE:PATH map spec (hash or lmdb, absolute path)."""
    kind, sep, path = v.partition(":")
    if not sep or kind not in MAP_TYPES:
        return f"must be TYPE:PATH with TYPE one of {', '.join(MAP_TYPES)} (got {v!r})"
    if not path.startswith("/"):
        return f"the map path must be absolute (got {path!r})"
    if path.endswith((".db", ".lmdb")):
        return f"give the map path without the {path.rsplit('.', 1)[1]!r} suffix, as Postfix does"
    return None


def _cidrs(v: Any) -> str | None:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"not an IP address or CIDR: {item!r}"
    return None


def _services(v: Any) -> str | None:
    for s in v:
        if s not in SERVICES:
            return f"unknown service {s!r} (known: {', '.join(SERVICES)})"
    return None


def _regexes(v: Any) -> str | None:
    for p in v:
        try:
            re.compile(p)
        except re.error as exc:
            return f"invalid regular expression {p!r}: {exc}"
    return None


def _weights(v: Any) -> str | None:
    for kind, w in v.items():
        if kind not in _FAILURE_KINDS:
            return f"unknown event kind {kind!r} (known: {', '.join(_FAILURE_KINDS)})"
        if not math.isfinite(w) or w < 0:
            return f"weight of {kind!r} must be a finite, non-negative number (got {w!r})"
    return None


def _map_value(v: Any) -> str | None:
    return None if v and not any(c.isspace() for c in v) else (
        "must be a non-empty word without spaces")


def _optional(check: typing.Callable[[Any], str | None]) -> typing.Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


CHECKS: dict[str, typing.Callable[[Any], str | None]] = {
    "sources.logfiles": _abs_paths,
    "sources.max_line": _int_range(256, 1 << 30),
    "sources.poll_interval": _positive,
    "rules.dirs": _abs_paths,
    "rules.matcher": lambda v: _one_of(MATCHERS)(v) or (
        "hyperscan is not installed (pip install hyperscan); use auto or re"
        if v == "hyperscan" and not hyperscan_available() else None),
    "relay.map": check_map_spec,
    "relay.grace": _positive,
    "relay.services": _services,
    "relay.value": _map_value,
    "relay.mynetworks": _optional(_cidrs),
    "relay.exclude": _cidrs,
    "relay.text_file": _optional(_abs_path),
    "bans.weights": _weights,
    "bans.findtime": _positive,
    "bans.maxretry": _positive,
    "bans.bantime": _positive,
    "bans.growth": lambda v: None if v >= 1 else "must be at least 1",
    "bans.max_bantime": _positive,
    "bans.permanent_after": _optional(_int_range(1, 1 << 31)),
    "bans.distinct_users": _non_negative,
    "bans.distinct_window": _positive,
    "bans.ipv4_prefix": _int_range(8, 32),
    "bans.ipv6_prefix": _int_range(16, 128),
    "bans.max_tracked": _positive,
    # backend, ports and each backend's names: the rules of the firewall registry (one
    # validation for this loader and the firewall itself)
    **firewall_checks(),
    "firewall.check_interval": _positive,
    "watchdog.limit": _non_negative,
    "watchdog.interval": _positive,
    "watchdog.grace": _non_negative,
    "watchdog.patterns": _regexes,
    "daemon.state_dir": _abs_path,
    "daemon.socket": _abs_path,
    "daemon.pidfile": _abs_path,
    "daemon.log": _one_of(LOG_TARGETS),
    "daemon.actions_log": _optional(_abs_path),
}


# Keys read as durations (90, 30s, 10m, 1h, 7d; logwatch/duration.py); True: 0 is allowed.
DURATION_KEYS: dict[str, bool] = {
    "sources.poll_interval": False, "relay.grace": False, "bans.findtime": False,
    "bans.bantime": False, "bans.max_bantime": False, "bans.distinct_window": False,
    "watchdog.limit": True, "watchdog.interval": False, "watchdog.grace": True,
}


# -- type checks ----------------------------------------------------------------

def _type_name(tp: Any) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping of names to numbers"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
        return f"{_type_name(args[0])} or null"
    return str(tp)


def _check_type(value: Any, tp: Any) -> Any:
    """Return the value converted to tp (int -> float), or raise TypeError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_check_type(v, item) for v in value]
    elif typing.get_origin(tp) is dict:
        key_tp, val_tp = typing.get_args(tp)
        if isinstance(value, dict):
            return {_check_type(k, key_tp): _check_type(v, val_tp) for k, v in value.items()}
    else:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        if len(args) == 1:
            return _check_type(value, args[0])
    raise TypeError(_type_name(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _cross_checks(cfg: Config, file: str, lines: dict[str, int],
                  final: bool = False) -> list[ConfigProblem]:
    problems = []
    if cfg.bans.max_bantime < cfg.bans.bantime:
        problems.append(ConfigProblem(
            file, lines.get("bans.max_bantime"), "bans.max_bantime",
            f"must be at least bans.bantime ({cfg.bans.bantime:g})"))
    problems += [ConfigProblem(file, lines.get(f"firewall.{key}"), f"firewall.{key}", message)
                 for key, message in firewall_cross_problems(cfg.firewall)]
    # Only the effective config must have a source: a file without one is fine with --stdin.
    if final and not (cfg.sources.logfiles or cfg.sources.stdin or cfg.sources.journal):
        problems.append(ConfigProblem(
            file, lines.get("sources.logfiles"), "sources.logfiles",
            "no source: give log files, or enable stdin or journal"))
    return problems


def parse_config(text: str, file: str = "<string>", *, empty_ok: bool = True) -> Config:
    """Parse YAML text into a Config on top of the defaults; raise ConfigError listing all errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError([ConfigProblem(file, None, "(syntax)",
                                         "invalid YAML: nested too deeply")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(file, line, "(syntax)", f"invalid YAML: {reason}")]) from exc
    if not expanded_size_ok(root):
        raise ConfigError([ConfigProblem(file, None, "(syntax)", (
            f"refused: more than {MAX_EXPANDED_NODES} nodes once its YAML aliases are "
            "expanded (an alias bomb?)"))])
    cfg = Config()
    problems: list[ConfigProblem] = []
    lines: dict[str, int] = {}
    if root is None:
        if not empty_ok:
            raise ConfigError([ConfigProblem(file, None, "(file)", (
                "empty: no settings at all (a file truncated while being saved?); refused, "
                "as it would switch everything to the built-in defaults"))])
        return cfg
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([ConfigProblem(file, _line(root), "(top level)",
                                         "must be a mapping of sections")])
    seen_sections: set[str] = set()
    for key_node, sect_node in root.value:
        sect = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
        if sect not in SECTIONS:
            problems.append(ConfigProblem(file, _line(key_node), sect,
                                          f"unknown section (known: {', '.join(SECTIONS)})"))
            continue
        if sect in seen_sections:
            problems.append(ConfigProblem(file, _line(key_node), sect, "section given twice"))
            continue
        seen_sections.add(sect)
        if isinstance(sect_node, yaml.ScalarNode) and sect_node.tag.endswith(":null"):
            continue  # "relay:" with nothing under it: keep the defaults
        if not isinstance(sect_node, yaml.MappingNode):
            problems.append(ConfigProblem(file, _line(sect_node), sect, "must be a mapping"))
            continue
        section_obj = getattr(cfg, sect)
        hints = _hints(SECTIONS[sect])
        known = [f.name for f in fields(SECTIONS[sect])]
        seen_keys: set[str] = set()
        for k_node, v_node in sect_node.value:
            key = k_node.value if isinstance(k_node, yaml.ScalarNode) else str(k_node)
            dotted = f"{sect}.{key}"
            if key not in hints:
                problems.append(ConfigProblem(file, _line(k_node), dotted,
                                              f"unknown key (known: {', '.join(known)})"))
                continue
            if key in seen_keys:
                problems.append(ConfigProblem(file, _line(k_node), dotted, "key given twice"))
                continue
            seen_keys.add(key)
            lines[dotted] = _line(v_node)
            try:
                raw = _construct(v_node)
            except yaml.YAMLError as exc:
                problems.append(ConfigProblem(file, _line(v_node), dotted, f"invalid value: {exc}"))
                continue
            if dotted in DURATION_KEYS:
                try:
                    raw = parse_duration(raw, allow_zero=DURATION_KEYS[dotted])
                except ValueError as exc:
                    problems.append(ConfigProblem(file, _line(v_node), dotted, str(exc)))
                    continue
            try:
                value = _check_type(raw, hints[key])
            except TypeError as exc:
                problems.append(ConfigProblem(file, _line(v_node), dotted,
                                              f"must be {exc} (got {raw!r})"))
                continue
            check = CHECKS.get(dotted)
            message = check(value) if check else None
            if message:
                problems.append(ConfigProblem(file, _line(v_node), dotted, message))
                continue
            if dotted == "bans.weights":
                value = {**section_obj.weights, **value}   # a partial mapping keeps the rest
            setattr(section_obj, key, value)
    if not problems:
        problems.extend(_cross_checks(cfg, file, lines))
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | None = None, *, missing_ok: bool = False,
                empty_ok: bool = True) -> Config:
    """Load the YAML file at path (default DEFAULT_CONFIG_PATH); missing_ok gives the defaults
    for an absent file; empty_ok=False (reload) refuses a file without any setting."""
    path = path or DEFAULT_CONFIG_PATH
    try:
        # Regular files only, size-capped, opened without blocking: a FIFO or /dev/zero is
        # refused instead of hanging the loop or exhausting memory.
        text = read_capped(path, CONFIG_MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return Config()
        raise ConfigError([ConfigProblem(path, None, "(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(path, None, "(file)", f"cannot read: {exc}")]) from None
    return parse_config(text, path, empty_ok=empty_ok)


# -- command-line overrides -------------------------------------------------------

def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _to_ports(text: str) -> list[int]:
    try:
        return [int(p) for p in _split_list(text)]
    except ValueError:
        raise TypeError("a comma-separated list of port numbers") from None


# argparse attribute -> (section, key) it overrides
OVERRIDES: dict[str, tuple[str, str]] = {
    "logfile": ("sources", "logfiles"),
    "from_start": ("sources", "from_start"),
    "stdin": ("sources", "stdin"),
    "rules": ("rules", "dirs"),
    "relay_map": ("relay", "map"),
    "grace": ("relay", "grace"),
    "maxretry": ("bans", "maxretry"),
    "findtime": ("bans", "findtime"),
    "bantime": ("bans", "bantime"),
    "whitelist": ("bans", "whitelist"),
    "firewall": ("firewall", "backend"),
    "chain": ("firewall", "chain"),
    "ports": ("firewall", "ports"),
    "watchdog_limit": ("watchdog", "limit"),
    "state_dir": ("daemon", "state_dir"),
    "socket": ("daemon", "socket"),
    "pidfile": ("daemon", "pidfile"),
    "log": ("daemon", "log"),
    "dry_run": ("daemon", "dry_run"),
    "actions_log": ("daemon", "actions_log"),
}


def apply_overrides(cfg: Config, args: Any) -> Config:
    """Apply command-line flags (attributes of args that are not None/False) over cfg, validated."""
    problems: list[ConfigProblem] = []
    for attr, (sect, key) in OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is None or value is False or value == []:
            continue
        flag = "--" + attr.replace("_", "-")
        dotted = f"{sect}.{key}"
        tp = _hints(SECTIONS[sect])[key]
        try:
            if attr == "ports" and isinstance(value, str):
                value = _to_ports(value)
            if attr == "actions_log":
                value = None if value in ("", "none") else os.path.abspath(value)
            if attr == "logfile":
                value = [os.path.abspath(v) for v in value]
            if attr in ("state_dir", "socket", "pidfile", "whitelist"):
                value = os.path.abspath(value)
            if attr == "rules":
                value = [os.path.abspath(v) for v in (value if isinstance(value, list) else [value])]
            value = _check_type(value, tp)
        except TypeError as exc:
            problems.append(ConfigProblem("<command line>", None, f"{flag} ({dotted})",
                                          f"must be {exc} (got {value!r})"))
            continue
        check = CHECKS.get(dotted)
        message = check(value) if check else None
        if message:
            problems.append(ConfigProblem("<command line>", None, f"{flag} ({dotted})", message))
            continue
        setattr(getattr(cfg, sect), key, value)
    if getattr(args, "stdin", False) and not getattr(args, "logfile", None):
        cfg.sources.logfiles = []   # --stdin alone: read only stdin
    if getattr(args, "watchdog_limit", None) == 0:
        cfg.watchdog.enabled = False
    if not problems:
        problems.extend(_cross_checks(cfg, "<command line>", {}, final=True))
    if problems:
        raise ConfigError(problems)
    return cfg
