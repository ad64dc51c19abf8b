"""Configuration: typed sections with Debian defaults and the YAML loader whose errors name
file, line and key; the checks are in configcheck.py (map types and sources: their registries)."""

from __future__ import annotations

import os
import typing
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from logwatch.daemon.configcheck import (  # noqa: F401  (re-exported: the config API)
    LOG_TARGETS,
    ConfigError,
    ConfigProblem,
    check_for,
    check_type,
    cross_checks,
    duration_for,
)
from logwatch.daemon.policyconfig import COERCE, PolicyConfig, QuotaConfig, parse_quotas
from logwatch.engine.accounts import DEFAULT_WEIGHTS as RISK_WEIGHTS
from logwatch.sources import SOURCES
from logwatch.util.duration import parse_duration
from logwatch.util.safeio import CONFIG_MAX_BYTES, read_capped
from logwatch.util.yamlsrc import MAX_EXPANDED_NODES, expanded_size_ok

DEFAULT_CONFIG_PATH = "/etc/logwatchd/logwatchd.yaml"
DEFAULT_RULES_DIR = "/usr/share/logwatchd/rules"
SECRET_KEYS = {"web.token"}      # their values never appear in an error message


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
    # Keys of registered source types that have no field here (SourceKey.type/default).
    extra: dict[str, Any] = field(default_factory=lambda: _source_defaults())


def _source_defaults() -> dict[str, Any]:
    fixed = {f for f in SourcesConfig.__dataclass_fields__}
    return {k: o.default for kind in SOURCES for k, o in kind.keys.items() if k not in fixed}


@dataclass
class RulesConfig:
    dirs: list[str] = field(default_factory=lambda: [DEFAULT_RULES_DIR])
    local_dir: str | None = "/etc/logwatchd/rules.d"   # adds or overrides rules by id
    matcher: str = "auto"             # prefilter literal matcher: auto, hyperscan or re


@dataclass
class RelayConfig:
    enabled: bool = True
    map: str = "hash:/etc/postfix/pop-before-smtp"    # TYPE:PATH, Postfix notation (MAP_TYPES)
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
        "rejected": 0, "stuck-session": 1, "s25r": 0.5,
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
class WebConfig:
    listen: str | None = None         # HOST:PORT of the metrics and status page; None: off
    token: str | None = None          # None: read-only; set: changes need it (and a CSRF token)


@dataclass
class StoreConfig:
    url: str | None = None            # None: sqlite://<daemon.state_dir>/state.db
    node: str | None = None           # this node's name in a shared store; None: the host name
    sync_interval: float = 60.0       # shared store: reconcile the firewall with the ban table


@dataclass
class AccountingConfig:
    enabled: bool = False             # correlate Postfix/Sendmail/Exim lines into messages
    stats_log: str | None = "/var/log/logwatchd/stats.log"   # one LTSV line per message
    max_open: int = 200_000           # open (queued) messages kept; the oldest are dropped
    max_age: float = 6 * 86400.0      # an open message older than this is expired
    keep: float = 7 * 86400.0         # message records kept in the store (logwatchctl messages)
    # The risk engine's keys (suspension of a SASL ID through check_sasl_access):
    sasl_access_map: str = "hash:/etc/postfix/logwatchd-sasl"
    suspend_score: float = 100.0
    suspend_action: str = "HOLD"      # HOLD (kept for review) or REJECT
    suspend_time: float = 3600.0
    never_suspend: list[str] = field(default_factory=list)
    # Account risk (logwatch/engine/accounts.py): the score's weights over the window, growth
    # of repeat suspensions and its cap, memory bounds, and counts over time (top senders).
    weights: dict[str, float] = field(default_factory=lambda: dict(RISK_WEIGHTS))
    window: float = 3600.0
    min_bounce_sample: int = 10
    suspend_growth: float = 2.0
    max_suspend_time: float = 7 * 86400.0
    max_accounts: int = 100_000
    top_senders: int = 10


@dataclass
class Config:
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    bans: BanConfig = field(default_factory=BanConfig)
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    quotas: list[QuotaConfig] = field(default_factory=list)      # the top-level list
    web: WebConfig = field(default_factory=WebConfig)


# ---------------------------------------------------------------------------
# YAML loader: every error names the file, the line and the key.
# ---------------------------------------------------------------------------


SECTIONS: dict[str, type] = {
    "sources": SourcesConfig, "rules": RulesConfig, "relay": RelayConfig, "bans": BanConfig,
    "firewall": FirewallConfig, "watchdog": WatchdogConfig, "daemon": DaemonConfig,
    "store": StoreConfig,
    "accounting": AccountingConfig,
    "policy": PolicyConfig,
    "web": WebConfig,
}
# Top-level keys that are no mapping section: name -> parser of their node.
LISTS = {"quotas": parse_quotas}


def section_keys(cls: type) -> dict[str, Any]:
    """The settable keys of a section and their types (sources: with the source types' keys)."""
    hints = typing.get_type_hints(cls)
    if cls is SourcesConfig:
        del hints["extra"]
        for kind in SOURCES:
            hints.update({k: o.type for k, o in kind.keys.items() if k not in hints})
    return hints


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _compose(text: str, file: str, empty_ok: bool) -> yaml.MappingNode | None:
    """The YAML node tree of the whole file (None: empty and that is fine); ConfigError if bad."""
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
    if root is None:
        if not empty_ok:
            raise ConfigError([ConfigProblem(file, None, "(file)", (
                "empty: no settings at all (a file truncated while being saved?); refused, "
                "as it would switch everything to the built-in defaults"))])
        return None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError([ConfigProblem(file, _line(root), "(top level)",
                                         "must be a mapping of sections")])
    return root


def parse_config(text: str, file: str = "<string>", *, empty_ok: bool = True) -> Config:
    """Parse YAML text into a Config on top of the defaults; raise ConfigError listing all errors."""
    root = _compose(text, file, empty_ok)
    cfg = Config()
    if root is None:
        return cfg
    problems: list[ConfigProblem] = []
    lines: dict[str, int] = {}
    known = [*SECTIONS, *LISTS]
    for sect, _key_node, sect_node in _known_once(root, file, known, "", "section", problems):
        if sect in LISTS:
            setattr(cfg, sect, LISTS[sect](sect_node, file, problems, _construct))
            continue
        if isinstance(sect_node, yaml.ScalarNode) and sect_node.tag.endswith(":null"):
            continue  # "relay:" with nothing under it: keep the defaults
        if not isinstance(sect_node, yaml.MappingNode):
            problems.append(ConfigProblem(file, _line(sect_node), sect, "must be a mapping"))
            continue
        _parse_section(cfg, sect, sect_node, file, problems, lines)
    if not problems:
        problems.extend(cross_checks(cfg, file, lines))
    if problems:
        raise ConfigError(problems)
    return cfg


def _known_once(node: yaml.MappingNode, file: str, known: Collection[str], prefix: str,
                what: str, problems: list[ConfigProblem],
                ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
    """The (name, key node, value node) of a mapping's known names given once; each unknown
    or repeated name adds a problem instead."""
    seen: set[str] = set()
    for k_node, v_node in node.value:
        key = k_node.value if isinstance(k_node, yaml.ScalarNode) else str(k_node)
        if key not in known:
            problems.append(ConfigProblem(file, _line(k_node), prefix + key,
                                          f"unknown {what} (known: {', '.join(known)})"))
        elif key in seen:
            problems.append(ConfigProblem(file, _line(k_node), prefix + key,
                                          f"{what} given twice"))
        else:
            seen.add(key)
            yield key, k_node, v_node


def _parse_section(cfg: Config, sect: str, node: yaml.MappingNode, file: str,
                   problems: list[ConfigProblem], lines: dict[str, int]) -> None:
    """Set the keys of one section on cfg; each bad key adds a problem instead."""
    section_obj = getattr(cfg, sect)
    hints = section_keys(SECTIONS[sect])
    for key, _k_node, v_node in _known_once(node, file, hints, f"{sect}.", "key", problems):
        dotted = f"{sect}.{key}"
        lines[dotted] = _line(v_node)
        try:
            value = _value(_construct(v_node), dotted, hints[key])
        except yaml.YAMLError as exc:
            problems.append(ConfigProblem(file, _line(v_node), dotted, f"invalid value: {exc}"))
            continue
        except ValueError as exc:
            problems.append(ConfigProblem(file, _line(v_node), dotted, str(exc)))
            continue
        if dotted in ("bans.weights", "accounting.weights"):
            value = {**section_obj.weights, **value}   # a partial mapping keeps the rest
        if sect == "sources" and key not in SourcesConfig.__dataclass_fields__:
            section_obj.extra[key] = value
        else:
            setattr(section_obj, key, value)


def _value(raw: Any, dotted: str, tp: Any) -> Any:
    """The checked value of one key; ValueError with the message otherwise."""
    if dotted in COERCE:
        raw = COERCE[dotted](raw)
    allow_zero = duration_for(dotted)
    if allow_zero is not None:
        raw = parse_duration(raw, allow_zero=allow_zero)
    try:
        value = check_type(raw, tp)
    except TypeError as exc:
        # A secret is never echoed: the message may reach logs and the status page.
        got = "(hidden)" if dotted in SECRET_KEYS else repr(raw)
        raise ValueError(f"must be {exc} (got {got})") from None
    check = check_for(dotted)
    message = check(value) if check else None
    if message:
        raise ValueError(message)
    return value


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
    "store": ("store", "url"),
    "stats_log": ("accounting", "stats_log"),
    "sasl_access_map": ("accounting", "sasl_access_map"),
    "policy_listen": ("policy", "listen"),
    "sasl_block_list": ("policy", "sasl_block_list"),
    "web_listen": ("web", "listen"),
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
        tp = section_keys(SECTIONS[sect])[key]
        try:
            if attr == "ports" and isinstance(value, str):
                value = _to_ports(value)
            if attr == "web_listen" and value in ("", "none", "off"):
                value = None
            if attr in ("actions_log", "stats_log"):
                value = None if value in ("", "none") else os.path.abspath(value)
            if attr == "logfile":
                value = [os.path.abspath(v) for v in value]
            if attr in ("state_dir", "socket", "pidfile", "whitelist", "sasl_block_list"):
                value = os.path.abspath(value)
            if attr == "rules":
                value = [os.path.abspath(v) for v in (value if isinstance(value, list) else [value])]
            value = check_type(value, tp)
        except TypeError as exc:
            problems.append(ConfigProblem("<command line>", None, f"{flag} ({dotted})",
                                          f"must be {exc} (got {value!r})"))
            continue
        check = check_for(dotted)
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
        problems.extend(cross_checks(cfg, "<command line>", {}, final=True))
    if problems:
        raise ConfigError(problems)
    return cfg
