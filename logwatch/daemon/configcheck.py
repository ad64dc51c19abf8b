"""Config validation: the problem types, every key's check (read from the registries for map
types and sources), the type checks, and the checks across keys."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any

from logwatch.daemon.policyconfig import CHECKS as POLICY_CHECKS
from logwatch.daemon.policyconfig import DURATIONS as POLICY_DURATIONS
from logwatch.effectors.firewall import config_checks as firewall_checks
from logwatch.effectors.firewall import cross_problems as firewall_cross_problems
from logwatch.parsing.events import FAILURE_KINDS, KINDS, RELAY_SERVICES
from logwatch.parsing.literalscan import MATCHERS, hyperscan_available
from logwatch.sources import SOURCES
from logwatch.util.checks import (
    Check,
    abs_path,
    abs_paths,
    cidrs,
    int_range,
    listen_address,
    non_negative,
    one_of,
    optional,
    positive,
    regexes,
    web_token,
)

if typing.TYPE_CHECKING:
    from logwatch.daemon.config import Config

LOG_TARGETS = ("syslog", "stderr")


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


# -- checks of one key that know the project's vocabulary ------------------------------

def map_spec(v: str) -> str | None:
    """A Postfix TYPE:PATH map of a registered type (relaymap.parse_spec)."""
    # Imported here: the writer's module is not needed by logwatchctl commands that only
    # read the socket path from the config.
    from logwatch.effectors.relaymap import RelayMapError, parse_spec

    try:
        parse_spec(v)
    except RelayMapError as exc:
        return str(exc)
    return None


def _services(v: Any) -> str | None:
    for s in v:
        if s not in RELAY_SERVICES:
            return f"unknown service {s!r} (known: {', '.join(RELAY_SERVICES)})"
    return None


def _weights(v: Any) -> str | None:
    known = [k for k in KINDS if k in FAILURE_KINDS]
    for kind, w in v.items():
        if kind not in FAILURE_KINDS:
            return f"unknown event kind {kind!r} (known: {', '.join(known)})"
        if not math.isfinite(w) or w < 0:
            return f"weight of {kind!r} must be a finite, non-negative number (got {w!r})"
    return None


def _map_value(v: Any) -> str | None:
    return None if v and not any(c.isspace() for c in v) else (
        "must be a non-empty word without spaces")


def _matcher(v: Any) -> str | None:
    return one_of(MATCHERS)(v) or (
        "hyperscan is not installed (pip install hyperscan); use auto or re"
        if v == "hyperscan" and not hyperscan_available() else None)


def _node_name(v: Any) -> str | None:
    ok = isinstance(v, str) and 0 < len(v) <= 63 and all(c.isalnum() or c in "-._" for c in v)
    return None if ok else "must be 1-63 letters, digits, '-', '.' or '_'"


def store_url_problem(v: Any) -> str | None:
    from logwatch.state.backends import url_problem

    return url_problem(v) if isinstance(v, str) else "must be a URL"


# What a suspended SASL ID's check_sasl_access entry says: mail held for review, or refused.
SUSPEND_ACTIONS = ("HOLD", "REJECT")


def _sasl_ids(v: Any) -> str | None:
    for name in v:
        if not name or any(c.isspace() or ord(c) < 32 for c in name):
            return f"not a SASL user name: {name!r}"
    return None


def _risk_weights(v: Any) -> str | None:
    from logwatch.engine.accounts import WEIGHT_NAMES

    for name, w in v.items():
        if name not in WEIGHT_NAMES:
            return f"unknown weight {name!r} (known: {', '.join(WEIGHT_NAMES)})"
        if not math.isfinite(w) or w < 0:
            return f"weight of {name!r} must be a finite, non-negative number (got {w!r})"
    return None


_CHECKS: dict[str, Check] = {
    "sources.max_line": int_range(256, 1 << 30),
    "rules.dirs": abs_paths,
    "rules.matcher": _matcher,
    "relay.map": map_spec,
    "relay.grace": positive,
    "relay.services": _services,
    "relay.value": _map_value,
    "relay.mynetworks": optional(cidrs),
    "relay.exclude": cidrs,
    "relay.text_file": optional(abs_path),
    "bans.weights": _weights,
    "bans.findtime": positive,
    "bans.maxretry": positive,
    "bans.bantime": positive,
    "bans.growth": lambda v: None if v >= 1 else "must be at least 1",
    "bans.max_bantime": positive,
    "bans.permanent_after": optional(int_range(1, 1 << 31)),
    "bans.distinct_users": non_negative,
    "bans.distinct_window": positive,
    "bans.ipv4_prefix": int_range(8, 32),
    "bans.ipv6_prefix": int_range(16, 128),
    "bans.max_tracked": positive,
    "watchdog.limit": non_negative,
    "watchdog.interval": positive,
    "watchdog.grace": non_negative,
    "watchdog.patterns": regexes,
    "daemon.state_dir": abs_path,
    "daemon.socket": abs_path,
    "daemon.pidfile": abs_path,
    "daemon.log": one_of(LOG_TARGETS),
    "daemon.actions_log": optional(abs_path),
    "store.url": optional(lambda v: store_url_problem(v)),
    "store.node": optional(_node_name),
    "store.sync_interval": positive,
    "accounting.stats_log": optional(abs_path),
    "accounting.max_open": int_range(1, 10_000_000),
    "accounting.max_age": positive,
    "accounting.keep": non_negative,
    "accounting.sasl_access_map": map_spec,
    "accounting.suspend_score": positive,
    "accounting.suspend_action": one_of(SUSPEND_ACTIONS),
    "accounting.suspend_time": positive,
    "accounting.never_suspend": _sasl_ids,
    "accounting.weights": _risk_weights,
    "accounting.window": positive,
    "accounting.min_bounce_sample": int_range(1, 1_000_000),
    "accounting.suspend_growth": positive,
    "accounting.max_suspend_time": positive,
    "accounting.max_accounts": int_range(1, 10_000_000),
    "accounting.top_senders": int_range(0, 1000),
    **POLICY_CHECKS,
    "web.listen": optional(listen_address),
    "web.token": optional(web_token),
}

# backend, ports and each backend's names: the rules of the firewall registry (one validation
# for this loader and the firewall itself)
_FIREWALL_CHECKS: dict[str, Check] = {
    **firewall_checks(),
    "firewall.check_interval": positive,
}

# Keys read as durations (90, 30s, 10m, 1h, 7d; util/duration.py); True: 0 is allowed.
_DURATION_KEYS: dict[str, bool] = {
    "relay.grace": False, "bans.findtime": False,
    "bans.bantime": False, "bans.max_bantime": False, "bans.distinct_window": False,
    "watchdog.limit": True, "watchdog.interval": False, "watchdog.grace": True,
    "store.sync_interval": False,
    "accounting.max_age": False, "accounting.keep": True, "accounting.suspend_time": False,
    "accounting.window": False, "accounting.max_suspend_time": False,
    **POLICY_DURATIONS,
}


def _owned(dotted: str, attr: str) -> Any:
    """That attribute of the SourceKey owning a sources key (the first one set), or None."""
    if not dotted.startswith("sources."):
        return None
    key = dotted.removeprefix("sources.")
    for kind in SOURCES:
        owned = kind.keys.get(key)
        if owned is not None and getattr(owned, attr) is not None:
            return getattr(owned, attr)
    return None


def check_for(dotted: str) -> Check | None:
    """The check of a key ("section.key"): the static table, or the source type owning it."""
    return _CHECKS.get(dotted) or _FIREWALL_CHECKS.get(dotted) or _owned(dotted, "check")


def duration_for(dotted: str) -> bool | None:
    """None if the key is no duration, else whether 0 is allowed."""
    if dotted in _DURATION_KEYS:
        return _DURATION_KEYS[dotted]
    return _owned(dotted, "duration")


def cross_checks(cfg: Config, file: str, lines: dict[str, int],
                 final: bool = False) -> list[ConfigProblem]:
    """Checks across keys; `final`: of the effective config (file plus command line)."""
    problems = []
    if cfg.bans.max_bantime < cfg.bans.bantime:
        problems.append(ConfigProblem(
            file, lines.get("bans.max_bantime"), "bans.max_bantime",
            f"must be at least bans.bantime ({cfg.bans.bantime:g})"))
    problems += [ConfigProblem(file, lines.get(f"firewall.{key}"), f"firewall.{key}", message)
                 for key, message in firewall_cross_problems(cfg.firewall)]
    # Only the effective config must have a source: a file without one is fine with --stdin.
    if final and not any(kind.enabled(cfg.sources) for kind in SOURCES):
        problems.append(ConfigProblem(
            file, lines.get("sources.logfiles"), "sources.logfiles",
            "no source: give log files, or enable " + " or ".join(
                kind.name for kind in SOURCES if kind.name != "file")))
    return problems


# -- type checks ----------------------------------------------------------------

def type_name(tp: Any) -> str:
    """How an error names the expected type."""
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
        return f"a list of {type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping of names to numbers"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
        return f"{type_name(args[0])} or null"
    return str(tp)


def check_type(value: Any, tp: Any) -> Any:
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
            return [check_type(v, item) for v in value]
    elif typing.get_origin(tp) is dict:
        key_tp, val_tp = typing.get_args(tp)
        if isinstance(value, dict):
            return {check_type(k, key_tp): check_type(v, val_tp) for k, v in value.items()}
    else:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        if len(args) == 1:
            return check_type(value, args[0])
    raise TypeError(type_name(tp))
