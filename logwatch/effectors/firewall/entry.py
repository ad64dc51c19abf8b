"""The firewall backends' registry: each entry owns its name (the config value and the
--firewall choice), its config keys with their validation, and the factory of its Firewall."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logwatch.effectors.firewall.base import Firewall, FirewallError, check_ports
from logwatch.registry import Registry

if TYPE_CHECKING:
    from logwatch.daemon.config import Config, FirewallConfig

Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class FirewallBackend:
    """One backend: its name, the firewall.* keys naming its kernel objects (key -> check, used by
    the config loader and the firewall alike), cross-key checks, and its Firewall class."""

    name: str
    factory: Callable[..., Firewall] | None           # None: holds nothing in the kernel
    keys: Mapping[str, Check] = field(default_factory=dict)
    cross: Callable[[FirewallConfig], list[tuple[str, str]]] | None = None


FIREWALLS: Registry[FirewallBackend] = Registry("firewall backend")

# Keys every backend shares; each backend's own keys come from its entry.
COMMON: dict[str, Check] = {"ports": check_ports}
# The stored identity (what a run created in the kernel) names these, after the backend; the
# order is the store's format and must not change (an older store compares equal).
IDENTITY_KEYS = ("chain", "ipset_v4", "ipset_v6", "nft_table")


def _backend(v: Any) -> str | None:
    names = FIREWALLS.names()
    return None if v in names else f"must be one of {', '.join(names)} (got {v!r})"


def key_check(key: str) -> Check:
    """The check of one firewall.* key: the backend choice, the ports, or every registered
    backend's rule for it (each name is checked whatever the backend: a later switch uses it)."""
    def check(v: Any) -> str | None:
        if key == "backend":
            return _backend(v)
        rules = [COMMON[key]] if key in COMMON else []
        rules += [e.keys[key] for e in FIREWALLS if key in e.keys]
        for rule in rules:
            problem = rule(v)
            if problem:
                return problem
        return None
    return check


def config_checks() -> dict[str, Check]:
    """CHECKS entries for the config loader: firewall.<key> -> check, for every key owned here."""
    keys = ["backend", *COMMON, *(k for e in FIREWALLS for k in e.keys)]
    return {f"firewall.{k}": key_check(k) for k in dict.fromkeys(keys)}


def validate(cfg: FirewallConfig) -> list[tuple[str, str]]:
    """Every problem of a firewall section as (key, message); [] when it is usable."""
    keys = ["backend", *COMMON, *(k for e in FIREWALLS for k in e.keys)]
    out = [(k, p) for k in dict.fromkeys(keys)
           if (p := key_check(k)(getattr(cfg, k, None))) is not None]
    return out + cross_problems(cfg)


def cross_problems(cfg: FirewallConfig) -> list[tuple[str, str]]:
    """Problems between keys (e.g. two set names that must differ), from every backend."""
    return [p for e in FIREWALLS if e.cross is not None for p in e.cross(cfg)]


def make_firewall(cfg: FirewallConfig, dry_run: bool = False, log: logging.Logger | None = None,
                  netns: str | None = None, **kwargs: Any) -> Firewall:
    """The configured backend; with dry_run (or a backend holding nothing) one that only logs."""
    from logwatch.effectors.firewall.none import NoneFirewall

    problems = validate(cfg)
    if problems:
        key, message = problems[0]
        if key == "backend":
            raise FirewallError(f"unknown firewall backend {cfg.backend!r} "
                                f"(one of {', '.join(FIREWALLS.names())})")
        raise FirewallError(f"bad firewall.{key}: {message}")
    factory = FIREWALLS.get(cfg.backend).factory
    if dry_run or factory is None:
        return NoneFirewall(cfg, log=log, netns=netns, would_be=cfg.backend, **kwargs)
    return factory(cfg, dry_run=False, log=log, netns=netns, **kwargs)


def firewall_identity(cfg: Config, dry_run: bool) -> tuple[str, ...] | None:
    """The names of the kernel objects a config's firewall owns (ports are rules inside them);
    None when it owns none (bans disabled, dry run, a backend holding nothing)."""
    fw = cfg.firewall
    if not cfg.bans.enabled or dry_run or fw.backend not in FIREWALLS \
            or FIREWALLS.get(fw.backend).factory is None:
        return None
    return (fw.backend, *(getattr(fw, k) for k in IDENTITY_KEYS))


def old_firewall(identity: Sequence[str]) -> Firewall:
    """A firewall for a stored identity, only to flush it (ports do not matter to flush)."""
    from logwatch.daemon.config import FirewallConfig

    backend, *names = identity
    if len(names) != len(IDENTITY_KEYS):
        raise FirewallError(f"not a firewall identity: {':'.join(identity)}")
    cfg = FirewallConfig(backend=backend, **dict(zip(IDENTITY_KEYS, names, strict=True)))
    return make_firewall(cfg, log=logging.getLogger("logwatchd.firewall"))
