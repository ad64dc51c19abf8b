"""Suspended SASL IDs in Postfix's check_sasl_access table: the effector of SuspensionAdded/
SuspensionLifted (the "accounting" contributor), and the table shared by its contributors (the
policy service's block list, the suspensions): the table holds their union."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from logwatch.engine.model import Suspension

log = logging.getLogger("logwatchd.suspensions")

CONTRIBUTOR = "accounting"
# accounting.suspend_action -> the table's right-hand side (access(5)).
ACTION_TEXT = {
    "HOLD": "HOLD suspended by logwatchd (compromised?)",
    "REJECT": "REJECT 5.7.1 suspended by logwatchd (compromised?)",
}


def action_text(action: str) -> str:
    """The access(5) action of accounting.suspend_action (HOLD or REJECT)."""
    return ACTION_TEXT[action.upper()]


class SaslContributors:
    """One check_sasl_access table, several contributors: each sets its whole entry set;
    the table := their union. When two name the same ID, a REJECT wins over anything else,
    then the first contributor by name (a block stays a block)."""

    def __init__(self, table: Any) -> None:
        self.table = table                    # effectors.saslaccess.SaslAccessTable
        self.parts: dict[str, dict[str, str]] = {}

    def set(self, contributor: str, entries: Mapping[str, str]) -> bool:
        self.parts[contributor] = dict(entries)
        return bool(self.table.sync(self.union()))

    def union(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in sorted(self.parts):
            for user, action in self.parts[name].items():
                key = user.lower()
                old = out.get(key)
                if old is None or (action.startswith("REJECT") and not old.startswith("REJECT")):
                    out[key] = action
        return out


class SuspensionTable:
    """The accounting contributor: add/remove suspensions, each change hands the whole set to
    set_entries(CONTRIBUTOR, {user: action}) (durable when it returns)."""

    def __init__(self, set_entries: Callable[[str, Mapping[str, str]], Any], action: str) -> None:
        self.set_entries = set_entries
        self.action = action_text(action)
        self.users: set[str] = set()

    def add(self, suspensions: Iterable[Suspension]) -> None:
        self.users.update(s.user for s in suspensions)
        self._push()

    def remove(self, users: Iterable[str]) -> None:
        self.users.difference_update(users)
        self._push()

    def rebuild(self, users: Iterable[str]) -> None:
        """Table := exactly these IDs (start, reload, repair)."""
        self.users = set(users)
        self._push()

    def entries(self) -> dict[str, str]:
        return dict.fromkeys(sorted(self.users), self.action)

    def _push(self) -> None:
        self.set_entries(CONTRIBUTOR, self.entries())
