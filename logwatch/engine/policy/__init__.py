"""Postfix policy decisions: pure logic, no I/O, the clock passed in (engine/policy/).

A request (PolicyRequest) goes through the registered checks (POLICY_CHECKS) in order; the
first that answers a Verdict decides, otherwise DUNNO. Each check lives in its own module
(banned.py, saslblock.py, s25r.py, quotas.py) and registers itself at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from logwatch.engine.policy.request import PolicyRequest
from logwatch.registry import Registry

DUNNO = "DUNNO"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one check answers: its rule id (shown in the audit) and the Postfix action text."""

    rule: str
    action: str


@dataclass(frozen=True, slots=True)
class Note:
    """Something a decision tells the log side (an S25R offence in `score` mode)."""

    kind: str
    ip: str
    rule: str


class Check(Protocol):
    """One check: a Verdict, or None to let the next check decide. commit=False (policy-test)
    must change no counter."""

    def decide(self, req: PolicyRequest, now: float, commit: bool) -> Verdict | None: ...


@dataclass
class PolicyContext:
    """What checks read besides the request: the engine's read-only queries, the SASL block
    list (replaced when its file changes), and an out-list of notes for the log side."""

    engine: Any = None                       # Engine (banned_net, grants, whitelist, ...)
    sasl_blocked: frozenset[str] = frozenset()   # lower-case SASL IDs
    notes: list[Note] = field(default_factory=list)
    # Read a small text file (lists, profiles); injected so that this package does no I/O.
    read_text: Callable[[str], str] | None = None


@dataclass(frozen=True)
class CheckEntry:
    """A registered check: build(policy config, quotas config, context) -> Check or None (off)."""

    name: str
    build: Callable[[Any, Any, PolicyContext], Check | None]


POLICY_CHECKS: Registry[CheckEntry] = Registry("policy check")


class Decider:
    """The checks of one configuration, in registry order; first match wins, else DUNNO."""

    def __init__(self, checks: list[tuple[str, Check]], context: PolicyContext) -> None:
        self.checks = checks
        self.context = context

    @classmethod
    def build(cls, policy_cfg: Any, quotas_cfg: Any, context: PolicyContext) -> Decider:
        checks = []
        for entry in POLICY_CHECKS:
            check = entry.build(policy_cfg, quotas_cfg, context)
            if check is not None:
                checks.append((entry.name, check))
        return cls(checks, context)

    def check(self, name: str) -> Check | None:
        """The built check of that name (None when off)."""
        return next((c for n, c in self.checks if n == name), None)

    def decide(self, req: PolicyRequest, now: float, commit: bool = True) -> Verdict:
        for _name, check in self.checks:
            verdict = check.decide(req, now, commit)
            if verdict is not None:
                return verdict
        return Verdict("none", DUNNO)


# The built-in checks, in the order they decide.
from logwatch.engine.policy import banned as _banned  # noqa: E402
from logwatch.engine.policy import quotas as _quotas  # noqa: E402
from logwatch.engine.policy import s25r as _s25r  # noqa: E402
from logwatch.engine.policy import saslblock as _saslblock  # noqa: E402

POLICY_CHECKS.register("banned", CheckEntry("banned", _banned.build))
POLICY_CHECKS.register("sasl-block", CheckEntry("sasl-block", _saslblock.build))
POLICY_CHECKS.register("s25r", CheckEntry("s25r", _s25r.build))
POLICY_CHECKS.register("quotas", CheckEntry("quotas", _quotas.build))

__all__ = ["DUNNO", "POLICY_CHECKS", "Check", "CheckEntry", "Decider", "Note", "PolicyContext",
           "PolicyRequest", "Verdict"]
