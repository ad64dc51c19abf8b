"""SASL-ID block list (smtpauth-manager's reject_ids.txt): a listed sasl_username is refused.

The list is one ID per line, `#` comments; the daemon re-reads the file on change and puts
the lower-cased IDs in the context (Postfix's check_sasl_access table folds case the same way).
"""

from __future__ import annotations

from typing import Any

from logwatch.engine.policy.request import PolicyRequest

DEFAULT_ACTION = "REJECT 5.7.1 Authentication ID blocked"


def parse_block_list(text: str) -> tuple[frozenset[str], list[str]]:
    """(lower-case IDs, warnings "line N: ...") of a block-list file's text."""
    from logwatch.effectors.saslaccess import key_problem

    ids: set[str] = set()
    warnings = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        problem = key_problem(line)
        if problem is not None:
            warnings.append(f"line {number}: {line[:80]!r}: {problem}")
            continue
        ids.add(line.lower())
    return frozenset(ids), warnings


class SaslBlockCheck:
    def __init__(self, context: Any, action: str) -> None:
        self.context = context
        self.action = action

    def decide(self, req: PolicyRequest, now: float, commit: bool) -> Any:
        from logwatch.engine.policy import Verdict

        user = req.sasl_username
        if user and user.lower() in self.context.sasl_blocked:
            return Verdict("sasl-block", self.action)
        return None


def build(policy: Any, quotas: Any, context: Any) -> SaslBlockCheck | None:
    if not policy.sasl_block_list:
        return None
    return SaslBlockCheck(context, policy.sasl_block_action)
