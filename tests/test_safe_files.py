"""Files we read are regular and size-capped and never block; files we write are private;
one process per state directory (issue 12, points 8, 12, 13 and 18)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemon_harness import postfix_config_dir, pyenv

from logwatch.daemon.actionlog import ActionLog
from logwatch.daemon.config import ConfigError, load_config
from logwatch.effectors.relaymap import open_relay_map
from logwatch.engine.whitelist import Whitelist
from logwatch.state.lock import StateLock, StateLockError
from logwatch.state.store import Store
from logwatch.util.safeio import CONFIG_MAX_BYTES
from logwatch.util.yamlsrc import YamlError, load_yaml


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the body blocks, e.g. on a FIFO."""
    def expired(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def alias_bomb(levels: int = 9, indent: str = "  ") -> str:
    """A few hundred bytes that expand to 9**levels scalars."""
    lines = [f"{indent}a0: &a0 [" + ",".join(['"lol"'] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"{indent}a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# -- reading: regular files only, capped, never blocking --------------------------------

def test_config_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "logwatchd.yaml"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(fifo))


def test_config_dev_zero_is_refused_not_memoryerror() -> None:
    with deadline(10), pytest.raises(ConfigError, match="not a regular file"):
        load_config("/dev/zero")


def test_config_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (CONFIG_MAX_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="more than"):
        load_config(str(big))


def test_empty_config_refused_only_when_asked(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# all commented out\n")
    assert load_config(str(empty)).relay.map      # the start-up behaviour stays
    with pytest.raises(ConfigError, match=r"empty\.yaml: \(file\): empty"):
        load_config(str(empty), empty_ok=False)


def test_check_config_refuses_alias_bomb_quickly(tmp_path: Path) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("relay:\n" + alias_bomb() + "  grace: *a8\n")
    assert cfg.stat().st_size < 600
    # Without the budget this took minutes or died with MemoryError; 60 s is only a fuse.
    proc = subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "check-config", str(cfg)],
                          capture_output=True, text=True, env=pyenv(), timeout=60)
    assert proc.returncode != 0
    assert "aliases are expanded" in proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


def test_rules_alias_bomb_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "bomb.yaml"
    rules.write_text("x:\n" + alias_bomb())
    with deadline(30), pytest.raises(YamlError, match="aliases are expanded"):
        load_yaml(rules)


def test_rules_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    with deadline(10), pytest.raises(YamlError, match="not a regular file"):
        load_yaml(fifo)


def test_whitelist_fifo_and_dev_zero_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "whitelist"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with deadline(10):
            wl, warnings = Whitelist.from_file(path)
        assert any("not a regular file" in w for w in warnings), warnings


def test_moderate_aliases_still_work(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("relay:\n  exclude: &ex [192.0.2.0/24]\n  mynetworks: *ex\n")
    assert load_config(str(cfg)).relay.mynetworks == ["192.0.2.0/24"]


# -- writing: private whatever the umask ------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "state" / "state.db"
    with umask(0):
        store = Store(db)
        try:
            store.set_cursor("journal", "x")
            for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                assert path.exists() and mode(path) == 0o600, path
        finally:
            store.close()


def test_old_world_readable_store_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    Store(db).close()
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{db}{suffix}")
        p.touch()
        p.chmod(0o644)
    Store(db).close()
    assert mode(db) == 0o600


def test_actions_log_is_not_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "actions.log"
    with umask(0):
        alog = ActionLog(str(path))
        alog.write("ban", ip="192.0.2.7/32")
        alog.close()
    assert mode(path) == 0o640
    path.chmod(0o644)                     # made by an older version
    alog = ActionLog(str(path))
    alog.write("ban", ip="192.0.2.8/32")
    alog.close()
    assert mode(path) == 0o640


def test_relay_text_file_is_not_world_readable_and_map_lists_back(tmp_path: Path) -> None:
    text = tmp_path / "grants.txt"
    with umask(0):
        rmap = open_relay_map(f"hash:{tmp_path / 'relay'}", text_file=str(text),
                              postfix_config_dir=str(postfix_config_dir(tmp_path)))
        rmap.rebuild(["192.0.2.1", "2001:db8::1"])
    assert mode(text) == 0o640
    assert rmap.listing() == {"192.0.2.1", "2001:db8::1"}


# -- the state directory lock -------------------------------------------------------------

def test_state_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    first = StateLock(str(tmp_path))
    first.acquire()
    try:
        second = StateLock(str(tmp_path))
        with pytest.raises(StateLockError, match=f"in use by pid {os.getpid()}"):
            second.acquire()
    finally:
        first.release()
    third = StateLock(str(tmp_path))       # released: free again
    third.acquire()
    third.release()
    assert mode(tmp_path / "lock") == 0o600
