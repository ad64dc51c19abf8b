"""Lost or wrong state, with the real daemon, real postmap and iptables in a namespace of its
own: afterwards the firewall == the store == what the log decided (issue 12: 7, 8, 9, 12, 18)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from netns import netns

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and mounts"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("postmap") is None,
                       reason="needs iproute2 and postfix"),
]

CHAIN = "LWD_STATE"
GUESSER = "203.0.113.9"
CLIENTS = ("192.0.2.11", "192.0.2.12")


def stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def login(ip: str) -> str:
    # Cyrus, not Dovecot: the Dovecot rules need Python > 3.11.2 (possessive groups).
    return (f"{stamp()} mail cyrus/pop3[4102]: login: [{ip}] alice PLAIN User logged in "
            f"SESSIONID=<mail-4102-1637496001-1-987654321>")


def unknown_user(ip: str, user: str) -> str:
    return (f"{stamp()} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
            f"550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<spam@example.net> to=<{user}@example.org> proto=ESMTP "
            f"helo=<guess>")


def guesses(ip: str = GUESSER) -> list[str]:
    return [unknown_user(ip, f"u{i}") for i in range(5)]


def drops(ns: str) -> list[str]:
    """Source nets of the DROP rules in our chain, duplicates kept."""
    nets = []
    for tool in ("iptables", "ip6tables"):
        out = subprocess.run(["ip", "netns", "exec", ns, tool, "-w", "-S", CHAIN],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            parts = line.split()
            if parts[:2] == ["-A", CHAIN] and "DROP" in parts and "-s" in parts:
                nets.append(parts[parts.index("-s") + 1])
    return sorted(nets)


def map_keys(d: DaemonProc) -> list[str]:
    proc = subprocess.run(["postmap", "-s", d.map], capture_output=True, text=True,
                          env=d.env(), timeout=30)
    return sorted(line.split()[0] for line in proc.stdout.splitlines() if line.strip())


def stored(d: DaemonProc) -> tuple[list[str], list[str]]:
    """(granted IPs, banned nets) in state.db, read-only."""
    db = sqlite3.connect(f"file:{d.base / 'state' / 'state.db'}?mode=ro", uri=True)
    try:
        grants = sorted(r[0] for r in db.execute("SELECT ip FROM grants"))
        bans = sorted(r[0] for r in db.execute("SELECT net FROM bans"))
    finally:
        db.close()
    return grants, bans


def wait_for(what, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def make(base: Path, ns: str, **daemon: object) -> DaemonProc:
    base.mkdir(exist_ok=True)
    return DaemonProc(base, {
        "firewall": {"backend": "iptables", "chain": CHAIN, "ports": [25]},
        "bans": {"maxretry": 5, "findtime": 600, "bantime": 3600},
        "relay": {"grace": 1800},
        "daemon": daemon,
    }, netns=ns)


def assert_consistent(d: DaemonProc, ns: str, clients: tuple[str, ...] = CLIENTS) -> None:
    """Firewall == store == what the log decided; map == store."""
    expect_bans = [f"{GUESSER}/32"]
    assert drops(ns) == expect_bans, d.stderr()
    assert map_keys(d) == sorted(clients), d.stderr()
    assert stored(d) == (sorted(clients), expect_bans), d.stderr()


@pytest.fixture
def ns() -> Iterator[str]:
    with netns("lwsf") as n:
        yield n.name


# -- 7: disk full ------------------------------------------------------------------------------

@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def stored_offset(d: DaemonProc) -> int:
    try:
        db = sqlite3.connect(f"file:{d.base / 'state' / 'state.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT offset FROM positions WHERE path = ?",
                             (str(d.log),)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return -1
    return row[0] if row else -1


@pytest.mark.parametrize("kill_while_full", [False, True], ids=["space-returns", "killed-full"])
def test_disk_full_loses_nothing(tmp_path: Path, ns: str, kill_while_full: bool) -> None:
    with tmpfs(tmp_path / "d" / "state", "1m") as state:
        d = make(tmp_path / "d", ns)
        try:
            d.start()
            d.append(login(CLIENTS[0]))
            assert wait_for(lambda: map_keys(d) == [CLIENTS[0]]), d.stderr()
            time.sleep(1.5)                       # its position is saved too
            filler = fill(state)
            mark = len(d.stderr())
            d.append(login(CLIENTS[1]), *guesses())
            # Applied to the kernel and the map at once, but the commit fails.
            assert wait_for(lambda: drops(ns) == [f"{GUESSER}/32"]), d.stderr()
            assert wait_for(lambda: "action=store-error" in d.stderr()[mark:]), (
                "precondition: the full tmpfs did not make the commit fail\n" + d.stderr())
            time.sleep(2.5)                       # position saves come and go meanwhile
            if kill_while_full:
                d.kill9()
                filler.unlink()
            else:
                filler.unlink()
                # Once space returns, the state (and only then the position) is written.
                size = d.log.stat().st_size
                assert wait_for(lambda: stored_offset(d) == size, 40), d.stderr()
                assert stored(d)[0] == sorted(CLIENTS), d.stderr()
                d.kill9()
            d.start()
            assert_consistent(d, ns)
        finally:
            d.stop()


# -- 9: a missing or 0-byte state.db -------------------------------------------------------

@pytest.mark.parametrize("how", ["zero-bytes", "schema-only"])
def test_empty_state_db_adopts_live_entries_and_reset_state_drops_them(
        tmp_path: Path, ns: str, how: str) -> None:
    d = make(tmp_path, ns)
    try:
        d.start()
        d.append(*(login(ip) for ip in CLIENTS), *guesses())
        assert wait_for(lambda: drops(ns) == [f"{GUESSER}/32"] and len(map_keys(d)) == 2)
        d.stop()
        db = tmp_path / "state" / "state.db"
        db.write_bytes(b"")                       # 0 bytes, as after a failed copy
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if how == "schema-only":
            # The first start on the empty file died after making the schema, before it
            # adopted anything: the next start must not take that store for the truth.
            from logwatch.state.store import Store
            Store(db).close()
        mark = len(d.stderr())
        d.start()
        assert "action=adopt bans=1 grants=2" in d.stderr()[mark:]
        assert_consistent(d, ns)
        st = d.req(cmd="status")
        assert any("adopted 1 ban(s) and 2 grant(s)" in e["message"] for e in st["errors"])
        assert [b["source"] for b in d.req(cmd="bans")["bans"]] == ["adopted"]
        # New log lines still act on top of the adopted state.
        d.append(*guesses("198.51.100.20"))
        assert wait_for(lambda: "198.51.100.20/32" in drops(ns)), d.stderr()
        d.stop()

        d.extra_args = ("--reset-state",)
        d.start()
        assert drops(ns) == [] and map_keys(d) == []
        assert stored(d) == ([], [])
    finally:
        d.stop()


# -- 12: a second instance on the same state --------------------------------------------------

def test_second_instance_refused_before_touching_anything(tmp_path: Path, ns: str) -> None:
    first = make(tmp_path / "a", ns)
    try:
        first.start()
        first.append(login(CLIENTS[0]), *guesses())
        assert wait_for(lambda: drops(ns) == [f"{GUESSER}/32"] and map_keys(first)), (
            first.stderr())
        # Another socket, the same state, map and chain; its own log has nothing.
        second = make(tmp_path / "b", ns, state_dir=str(tmp_path / "a" / "state"))
        second.settings["relay"]["map"] = second.map = first.map
        second.write_config()
        second.start(wait=False)
        assert second.proc is not None
        rc = second.proc.wait(60)
        second.stop()
        err = second.stderr()
        assert rc == 1, err
        assert "action=startup-failed" in err and "is in use by pid" in err
        for touched in ("relay-rebuild", "fw-setup", "fw-reconcile"):
            assert f"action={touched}" not in err
        assert drops(ns) == [f"{GUESSER}/32"] and map_keys(first) == [CLIENTS[0]]
        assert first.req(cmd="status")["ok"]
    finally:
        first.stop()


# -- 8: an empty or non-regular config on reload ------------------------------------------------

def test_truncated_or_fifo_config_on_reload_keeps_everything(tmp_path: Path, ns: str) -> None:
    d = make(tmp_path, ns)
    # The flag keeps even a regression (the defaults applied) away from /etc/postfix.
    d.extra_args = ("--relay-map", d.map)
    good = None
    try:
        d.start()
        d.append(*(login(ip) for ip in CLIENTS), *guesses())
        assert wait_for(lambda: drops(ns) == [f"{GUESSER}/32"] and len(map_keys(d)) == 2)
        good = d.config.read_text()

        d.write_config("")                        # truncated while an editor saved it
        reply = d.req(cmd="reload")
        assert not reply["ok"] and "empty" in reply["error"], reply

        d.config.unlink()
        os.mkfifo(d.config)                       # nobody will ever write into it
        started = time.monotonic()
        reply = d.req(cmd="reload")
        assert not reply["ok"] and "not a regular file" in reply["error"], reply
        assert time.monotonic() - started < 20    # a fuse against a blocked loop

        assert d.req(cmd="status")["reloads"] == 0
        assert_consistent(d, ns)
        assert "action=relay-rebuild" not in d.stderr().split("action=start ", 1)[1]
        d.config.unlink()
        d.write_config(good)
        assert d.req(cmd="reload")["ok"]
        assert_consistent(d, ns)
    finally:
        d.stop()


# -- 18: a corrupt page in state.db ---------------------------------------------------------

def test_corrupt_db_page_is_a_clean_startup_failure(tmp_path: Path) -> None:
    from logwatch.engine.model import Ban
    from logwatch.state.store import Store

    db = tmp_path / "state" / "state.db"
    store = Store(db)
    store.put_bans(Ban(f"198.51.{i // 250}.{i % 250}/32", 0.0, 4e9, reason={"user-unknown": 5})
                   for i in range(2000))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = store.db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'bans'").fetchone()[0]
    page = store.db.execute("PRAGMA page_size").fetchone()[0]
    store.close()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * page)
        fh.write(b"\xa5" * page)

    d = DaemonProc(tmp_path)
    d.start(wait=False)
    assert d.proc is not None
    rc = d.proc.wait(60)
    d.stop()
    err = d.stderr()
    assert rc == 1, err
    assert "action=startup-failed error=state:" in err and "malformed" in err, err
    assert "Traceback" not in err
