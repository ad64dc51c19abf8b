"""The accounting process skips the rules' self-checks only on the very rules the daemon
checked (accountingworker.load_rules, accountingwire.rules_digest): rules edited since, even
a sample, are checked again and their failure stops the start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import logwatch.parsing.rules as rules_module
from logwatch.daemon.accountingwire import frame, rules_digest
from logwatch.daemon.accountingworker import load_rules, wait_rules
from logwatch.parsing.rules import SelfTestError, load_ruleset

RULES = Path(__file__).resolve().parent.parent / "rules"


def _cfg(rules_dir: Path) -> Any:
    return SimpleNamespace(rules=SimpleNamespace(dirs=[str(rules_dir)], local_dir=None))


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = rules_module.check_rules

    def check(rules: Any, probes: bool = True) -> list[str]:
        calls.append(1)
        return real(rules, probes=probes)
    monkeypatch.setattr(rules_module, "check_rules", check)
    return calls


def test_the_checked_rules_are_not_checked_again(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    checked = rules_digest(load_ruleset([tmp_path / "rules"]))     # the daemon's
    calls = _counting(monkeypatch)
    ruleset = load_rules(_cfg(tmp_path / "rules"), checked)
    assert calls == [] and rules_digest(ruleset) == checked
    assert {r.id for r in ruleset.message_rules} >= {"postfix-msg-client"}
    load_rules(_cfg(tmp_path / "rules"), None)          # no digest (an older daemon): checked
    assert calls == [1]


def test_rules_edited_since_the_daemon_checked_them_are_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    checked = rules_digest(load_ruleset([tmp_path / "rules"]))
    path = tmp_path / "rules" / "postfix-messages.yaml"
    # Only a sample's expectation changes (a wrong one): the regexes are the same.
    path.write_text(path.read_text().replace("user: alice, method: PLAIN",
                                             "user: mallory, method: PLAIN", 1))
    calls = _counting(monkeypatch)
    with pytest.raises(SelfTestError):
        load_rules(_cfg(tmp_path / "rules"), checked)
    assert calls == [1]


def test_the_daemons_digest_after_the_start_frames_kept_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the daemon's start the digest comes after the setup: the worker loaded its rules
    unchecked, waits for it, and keeps the frames read meanwhile for later."""
    shutil.copytree(RULES, tmp_path / "rules")
    checked = rules_digest(load_ruleset([tmp_path / "rules"]))
    calls = _counting(monkeypatch)
    worker = SimpleNamespace(ruleset=load_rules(_cfg(tmp_path / "rules"), None, defer=True))
    assert calls == []
    for digest, expect in ((checked, []), ("0" * 64, [1]), (None, [1, 1])):
        r, w = os.pipe()
        os.write(w, frame(("chunk", 2, b"b\n")) + frame(("rules", digest))
                 + frame(("chunk", 3, b"c")))
        os.close(w)
        buf = bytearray()
        msgs = wait_rules(worker, r, buf, [("chunk", 1, b"a\n")])    # type: ignore[arg-type]
        os.close(r)
        assert [m[1] for m in msgs] == [1, 2, 3] and not buf and calls == expect
