"""store.url / store.node / --store: parsed, checked (file, line, key), defaulted, and the
sqlite:// form opens the same SQLite store as daemon.state_dir."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from logwatch.daemon.config import ConfigError, apply_overrides, load_config
from logwatch.daemon.factory import node_name, store_url
from logwatch.engine.model import Grant
from logwatch.state.store import Store


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "logwatchd.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_defaults_keep_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "daemon:\n  state_dir: /srv/lw\n")
    assert store_url(cfg) == "sqlite:///srv/lw/state.db"
    assert node_name(cfg) and "." not in node_name(cfg)


def test_keys_and_flag(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "store:\n  url: postgresql://lw@db1/logwatchd\n  node: smtp-2\n"
                          "  sync_interval: 30s\n")
    assert (cfg.store.url, cfg.store.node, cfg.store.sync_interval) == \
        ("postgresql://lw@db1/logwatchd", "smtp-2", 30.0)
    args = argparse.Namespace(store="sqlite:///var/tmp/x.db")
    assert apply_overrides(cfg, args).store.url == "sqlite:///var/tmp/x.db"


@pytest.mark.parametrize("text, key", [
    ("store:\n  url: mysql://db/x\n", "store.url"),
    ("store:\n  url: sqlite://relative.db\n", "store.url"),
    ("store:\n  node: 'a b'\n", "store.node"),
    ("store:\n  sync_interval: 0\n", "store.sync_interval"),
])
def test_bad_values_name_file_line_and_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value.problems[0])
    assert key in message and "logwatchd.yaml:" in message, message
    with pytest.raises(ConfigError):
        apply_overrides(_load(tmp_path, ""),
                        argparse.Namespace(store="mysql://db/x"))


def test_sqlite_url_is_the_same_store(tmp_path: Path) -> None:
    s = Store(url=f"sqlite://{tmp_path}/state.db")
    try:
        s.put_grants([Grant("192.0.2.7", "bob", "imap", 1.0, 2.0)])
    finally:
        s.close()
    t = Store(tmp_path / "state.db")
    try:
        assert [g.ip for g in t.load_grants()] == ["192.0.2.7"] and not t.shared
    finally:
        t.close()


def test_accounting_is_accepted_on_a_shared_store(tmp_path: Path) -> None:
    # Its rows are keyed by node (migration 6): no longer refused.
    cfg = _load(tmp_path, "store:\n  url: postgresql://lw@db1/logwatchd\naccounting:\n"
                          "  enabled: true\n")
    assert cfg.accounting.enabled
    assert _load(tmp_path, "accounting:\n  enabled: true\n").accounting.enabled
