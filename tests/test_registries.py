"""Extension points as registries: a relay-map type or a source registered by one class and
one registration line gets config validation (file, line, key) and check-config for free."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logwatch.cli import ctl
from logwatch.daemon.config import ConfigError, apply_overrides, load_config
from logwatch.effectors.relaymap import MAP_TYPES, MapType, open_relay_map
from logwatch.registry import Registry
from logwatch.sources import SOURCES, SourceContext, SourceKey, SourceType, build_sources
from logwatch.util.checks import one_of

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test registers is gone afterwards, even when it fails."""
    reg: Registry[Any]
    for reg in (MAP_TYPES, SOURCES):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    yield


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "logwatchd.yaml"
    path.write_text(f"rules:\n  dirs: [{REPO / 'rules'}]\n  local_dir: null\n"
                    f"bans:\n  whitelist: null\n{body}")
    return str(path)


def errors(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


# -- a relay-map type -------------------------------------------------------------------

def register_dummy_map_type() -> None:
    MAP_TYPES.register("dummy", MapType("dummy", ".dmy", lambda path: None))


def test_a_registered_map_type_is_accepted_by_config_and_check_config(tmp_path, capsys):
    path = write(tmp_path, "relay:\n  map: dummy:/etc/postfix/relay\n")
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:7: relay.map: ") and "one of hash, lmdb " in msg
    assert ctl._check_config(path) == 1

    register_dummy_map_type()
    assert load_config(path).relay.map == "dummy:/etc/postfix/relay"
    assert ctl._check_config(path) == 0, capsys.readouterr().err
    # Its suffix is refused on the path as the built-in ones are; the error lists it.
    (msg,) = errors(write(tmp_path, "relay:\n  map: dummy:/etc/postfix/relay.dmy\n"))
    assert "without the 'dmy' suffix" in msg
    (msg,) = errors(write(tmp_path, "relay:\n  map: nosuch:/etc/postfix/relay\n"))
    assert "one of hash, lmdb, dummy " in msg
    # The core writer knows its file name from the entry.
    rmap = open_relay_map("dummy:/etc/postfix/relay", dry_run=True)
    assert rmap.spec.file == "/etc/postfix/relay.dmy"


# -- a source ---------------------------------------------------------------------------

class DummySource:
    """Delivers one greeting line when processed."""

    def __init__(self, greeting: str, ctx: SourceContext) -> None:
        self.greeting = greeting
        self.ctx = ctx

    def fileno(self) -> int | None:
        return None

    def process(self) -> None:
        self.ctx.on_chunk("dummy", self.greeting.encode() + b"\n")


def register_dummy_source() -> None:
    SOURCES.register("dummy", SourceType(
        "dummy", lambda sc: sc.extra["dummy_greeting"] is not None,
        lambda sc, ctx: DummySource(sc.extra["dummy_greeting"], ctx),
        keys={"dummy_greeting": SourceKey(one_of(("hello", "hi")), type=str | None)}))


def test_a_registered_source_gets_its_keys_validated_and_is_built(tmp_path, capsys):
    path = write(tmp_path, "sources:\n  logfiles: []\n  dummy_greeting: hello\n")
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:8: sources.dummy_greeting: unknown key")

    register_dummy_source()
    cfg = load_config(path)
    assert cfg.sources.extra == {"dummy_greeting": "hello"}
    assert ctl._check_config(path) == 0, capsys.readouterr().err
    # Its type and its check, with file, line and key.
    assert errors(write(tmp_path, "sources:\n  dummy_greeting: 5\n")) == [
        f"{tmp_path}/logwatchd.yaml:7: sources.dummy_greeting: must be a string (got 5)"]
    assert errors(write(tmp_path, "sources:\n  dummy_greeting: bye\n")) == [
        f"{tmp_path}/logwatchd.yaml:7: sources.dummy_greeting: "
        "must be one of hello, hi (got 'bye')"]
    # It counts as a source for the effective config and is built as the daemon builds its
    # sources (Daemon._make_sources is build_sources).
    cfg = apply_overrides(cfg, argparse.Namespace())
    chunks: list[tuple[str, bytes]] = []
    (src,) = build_sources(cfg.sources, SourceContext(lambda n, c: chunks.append((n, c))))
    src.process()
    assert chunks == [("dummy", b"hello\n")]
    # Off (its default): no source at all is an error again.
    off = load_config(write(tmp_path, "sources:\n  logfiles: []\n"))
    assert off.sources.extra == {"dummy_greeting": None}
    with pytest.raises(ConfigError, match="no source: give log files, or enable journal or "
                                          "stdin or dummy"):
        apply_overrides(off, argparse.Namespace())


def test_builtin_sources_in_the_daemons_order():
    assert SOURCES.names() == ("file", "journal", "stdin")
    assert MAP_TYPES.names() == ("hash", "lmdb")
