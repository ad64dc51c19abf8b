"""The policy service's config: the `policy:` section, the top-level `quotas:` list, their
checks, and the parsing of `quotas:` (errors name file, line and key, e.g. quotas[1].limit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from logwatch.engine.policy import quotas as _quotas
from logwatch.engine.policy import s25r as _s25r
from logwatch.engine.policy.quotas import QuotaSpec
from logwatch.engine.policy.saslblock import DEFAULT_ACTION as SASL_BLOCK_ACTION
from logwatch.util.checks import Check, abs_path, non_negative, one_of, optional, positive
from logwatch.util.duration import parse_duration

S25R_MODES = (*_s25r.MODES, "on")     # on: the same as defer
# What the engine knows how to count (engine/policy/quotas.py: one definition each).
QUOTA_KEYS = _quotas.KEYS
QUOTA_COUNTS = _quotas.COUNTS
QUOTA_ACTIONS = tuple(_quotas.ACTIONS)


@dataclass
class PolicyConfig:
    listen: str | None = None         # unix:/path or inet:host:port; None: no policy service
    banned_action: str = "REJECT 5.7.1 Access denied"
    sasl_block_list: str | None = None
    sasl_block_action: str = SASL_BLOCK_ACTION
    sasl_access_map: str | None = None     # hash:/path or lmdb:/path (check_sasl_access)
    s25r: str = "off"                 # off | score | defer | reject (on: defer)
    s25r_whitelist: str | None = None
    s25r_blacklist: str | None = None
    on_error: str = "DUNNO"
    audit_retention: float = 30 * 86400.0
    socket_mode: str = "0666"         # unix: socket's mode (Postfix's smtpd runs as postfix)
    socket_owner: str | None = None
    socket_group: str | None = None
    idle_timeout: float = 600.0       # Postfix closes idle policy connections after 300 s


# A configured quota is the engine's QuotaSpec itself (one definition of its fields).
QuotaConfig = QuotaSpec


def action_text(v: Any) -> str | None:
    """A Postfix access(5) action: one line of printable ASCII."""
    if (not v or v != v.strip() or len(v) > 500 or not v.isascii()
            or any(ord(c) < 32 or ord(c) == 127 for c in v)):
        return "must be one line of printable ASCII (a Postfix action such as DUNNO or REJECT ...)"
    return None


def listen_address(v: Any) -> str | None:
    """unix:/absolute/path or inet:HOST:PORT (HOST may be [IPv6])."""
    if v.startswith("unix:"):
        return abs_path(v[5:])
    if v.startswith("inet:"):
        host, sep, port = v[5:].rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return None
    return f"must be unix:/PATH or inet:HOST:PORT (got {v!r})"


def _mode(v: Any) -> str | None:
    try:
        mode = int(v, 8)
    except ValueError:
        mode = -1
    return None if 0 <= mode <= 0o777 else f"must be an octal mode such as 0666 (got {v!r})"


def _map(v: Any) -> str | None:
    from logwatch.daemon.configcheck import map_spec

    return map_spec(v)


CHECKS: dict[str, Check] = {
    "policy.listen": optional(listen_address),
    "policy.banned_action": action_text,
    "policy.sasl_block_list": optional(abs_path),
    "policy.sasl_block_action": action_text,
    "policy.sasl_access_map": optional(_map),
    "policy.s25r": one_of(S25R_MODES),
    "policy.s25r_whitelist": optional(abs_path),
    "policy.s25r_blacklist": optional(abs_path),
    "policy.on_error": action_text,
    "policy.audit_retention": positive,
    "policy.socket_mode": _mode,
    "policy.idle_timeout": positive,
}
DURATIONS: dict[str, bool] = {"policy.audit_retention": False, "policy.idle_timeout": False}
# YAML 1.1 reads a bare off/on as false/true: `s25r: off` means the mode "off".
COERCE: dict[str, Any] = {
    "policy.s25r": lambda v: ("on" if v else "off") if isinstance(v, bool) else v,
}

_QUOTA_FIELDS: dict[str, tuple[type, Check | None]] = {
    "name": (str, lambda v: None if v and v.replace("-", "").replace("_", "").isalnum()
             else "must be a word of letters, digits, - and _"),
    "key": (str, one_of(QUOTA_KEYS)),
    "count": (str, one_of(QUOTA_COUNTS)),
    "limit": (int, non_negative),
    "period": (float, positive),
    "action": (str, one_of(QUOTA_ACTIONS)),
    "profiles": (str, abs_path),
}
_REQUIRED = ("name", "key", "count", "limit", "period")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def parse_quotas(node: yaml.Node, file: str, problems: list[Any],
                 construct: Any) -> list[QuotaConfig]:
    """The quotas of a `quotas:` node; each bad item or key adds a ConfigProblem."""
    from logwatch.daemon.configcheck import ConfigProblem

    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return []
    if not isinstance(node, yaml.SequenceNode):
        problems.append(ConfigProblem(file, _line(node), "quotas", "must be a list of quotas"))
        return []
    out, names = [], set()
    for n, item in enumerate(node.value):
        where = f"quotas[{n}]"
        if not isinstance(item, yaml.MappingNode):
            problems.append(ConfigProblem(file, _line(item), where, "must be a mapping"))
            continue
        values, ok = _quota_values(item, where, file, problems, construct)
        if not ok:
            continue
        missing = [k for k in _REQUIRED if k not in values]
        if missing:
            problems.append(ConfigProblem(file, _line(item), where,
                                          f"missing {', '.join(missing)}"))
            continue
        if values["name"] in names:
            problems.append(ConfigProblem(file, _line(item), f"{where}.name",
                                          f"quota {values['name']!r} given twice"))
            continue
        names.add(values["name"])
        out.append(QuotaConfig(**values))
    return out


def _quota_values(item: yaml.MappingNode, where: str, file: str, problems: list[Any],
                  construct: Any) -> tuple[dict[str, Any], bool]:
    from logwatch.daemon.configcheck import ConfigProblem

    values: dict[str, Any] = {}
    ok = True
    for k_node, v_node in item.value:
        key = k_node.value if isinstance(k_node, yaml.ScalarNode) else str(k_node)
        dotted = f"{where}.{key}"
        if key not in _QUOTA_FIELDS:
            problems.append(ConfigProblem(file, _line(k_node), dotted,
                                          f"unknown key (known: {', '.join(_QUOTA_FIELDS)})"))
            ok = False
            continue
        tp, check = _QUOTA_FIELDS[key]
        try:
            value = quota_value(key, construct(v_node), tp, check)
        except (ValueError, yaml.YAMLError) as exc:
            problems.append(ConfigProblem(file, _line(v_node), dotted, str(exc)))
            ok = False
            continue
        values[key] = value
    return values, ok


def quota_value(key: str, raw: Any, tp: type, check: Check | None) -> Any:
    """One quota field, type-checked and checked; ValueError with the message otherwise."""
    from logwatch.daemon.configcheck import check_type

    if key == "period":
        raw = parse_duration(raw)       # finite (and `positive` checks it again)
    try:
        value = check_type(raw, tp)     # the config's own types: int -> float, no bools
    except TypeError as exc:
        raise ValueError(f"must be {exc} (got {raw!r})") from None
    message = check(value) if check else None
    if message:
        raise ValueError(message)
    return value
