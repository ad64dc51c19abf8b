"""SaslAccessTable against the real postmap(1): what check_sasl_access would find."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from postfix_helpers import postfix_config_dir

from logwatch.effectors.saslaccess import SaslAccessError, SaslAccessTable, key_problem

KINDS = ["hash", "lmdb"]


@pytest.fixture(scope="module")
def cfdir() -> Iterator[str]:
    with postfix_config_dir() as d:
        yield d


def lookup(cfdir: str, spec: str, key: str) -> str | None:
    """postmap -q KEY SPEC: the value, or None when absent."""
    proc = subprocess.run(["postmap", "-c", cfdir, "-q", key, spec], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.mark.needs("postmap")
@pytest.mark.parametrize("kind", KINDS)
def test_sync_writes_exactly_the_entries(kind: str, tmp_path: Path, cfdir: str) -> None:
    spec = f"{kind}:{tmp_path}/sasl-access"
    table = SaslAccessTable(spec, postfix_config_dir=cfdir)
    assert table.sync({"Alice@Example.org": "REJECT 5.7.1 blocked", "bob": "HOLD suspended"})
    # smtpd folds the looked-up name too: any case of the name finds the entry.
    assert lookup(cfdir, spec, "alice@example.org") == "REJECT 5.7.1 blocked"
    assert lookup(cfdir, spec, "ALICE@EXAMPLE.ORG") == "REJECT 5.7.1 blocked"
    assert lookup(cfdir, spec, "bob") == "HOLD suspended"
    assert lookup(cfdir, spec, "carol") is None
    assert table.entries() == {"alice@example.org": "REJECT 5.7.1 blocked",
                               "bob": "HOLD suspended"}
    inode = os.stat(table.spec.file).st_ino
    assert not table.sync({"bob": "HOLD suspended", "alice@example.org": "REJECT 5.7.1 blocked"})
    assert os.stat(table.spec.file).st_ino == inode          # unchanged: no rebuild
    assert table.sync({"bob": "HOLD suspended"})
    assert lookup(cfdir, spec, "alice@example.org") is None
    assert os.stat(table.spec.file).st_ino != inode          # renamed into place
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
    # A fresh writer reads what the file holds and sees no change to make.
    again = SaslAccessTable(spec, postfix_config_dir=cfdir)
    assert again.entries() == {"bob": "HOLD suspended"}
    assert not again.sync({"BOB": "HOLD suspended"})
    assert again.sync({})
    assert lookup(cfdir, spec, "bob") is None


@pytest.mark.needs("postmap")
def test_hostile_names_never_reach_postmap(tmp_path: Path, cfdir: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    spec = f"hash:{tmp_path}/sasl-access"
    table = SaslAccessTable(spec, postfix_config_dir=cfdir)
    hostile = {"eve\nmallory": "REJECT x", "eve mallory": "REJECT x", "#eve": "REJECT x",
               "eve\0": "REJECT x", "": "REJECT x", "x" * 600: "REJECT x",
               "ok": "REJECT a\nmallory OK", "é": "REJECT x"}
    with caplog.at_level(logging.ERROR):
        table.sync({**hostile, "good": "REJECT 5.7.1 no"})
    assert table.entries() == {"good": "REJECT 5.7.1 no"}
    assert lookup(cfdir, spec, "mallory") is None
    assert lookup(cfdir, spec, "eve") is None
    assert lookup(cfdir, spec, "ok") is None
    assert caplog.text.count("action=sasl-access-skip") == len(hostile)


def test_key_problem_and_bad_spec(tmp_path: Path) -> None:
    assert key_problem("user@example.org") is None
    assert key_problem("a b") and key_problem("a\tb") and key_problem("#a")
    with pytest.raises(SaslAccessError):
        SaslAccessTable(f"btree:{tmp_path}/x", dry_run=True)
    with pytest.raises(SaslAccessError):
        SaslAccessTable("hash:relative/x", dry_run=True)
    with pytest.raises(SaslAccessError):
        SaslAccessTable(f"hash:{tmp_path}/missing-dir/x")


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    table = SaslAccessTable(f"hash:{tmp_path}/sasl-access", dry_run=True)
    assert not table.sync({"bob": "REJECT"})
    assert table.entries() == {"bob": "REJECT"}
    assert os.listdir(tmp_path) == []
