"""RelayMap against the real postmap(1): contents, keys, text copy, bad input, concurrent readers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import require
from postfix_helpers import postfix_config_dir

from logwatch.effectors.relaymap import RelayMap, RelayMapError, open_relay_map

KINDS = ["hash", "lmdb"]
SUFFIX = {"hash": ".db", "lmdb": ".lmdb"}


@pytest.fixture(scope="module")
def cfdir() -> Iterator[str]:
    with postfix_config_dir() as d:
        yield d


def lookup(cfdir: str, spec: str, key: str) -> tuple[int, str, str]:
    """postmap -q KEY SPEC -> (exit code, stdout stripped, stderr stripped)."""
    proc = subprocess.run(["postmap", "-c", cfdir, "-q", key, spec], capture_output=True,
                          text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


def dump(cfdir: str, spec: str) -> dict[str, str]:
    proc = subprocess.run(["postmap", "-c", cfdir, "-s", spec], capture_output=True, text=True,
                          timeout=60, check=True)
    return dict(line.split(None, 1) for line in proc.stdout.splitlines())


def make(kind: str, tmp_path: Path, cfdir: str, **kw) -> tuple[RelayMap, str]:
    spec = f"{kind}:{tmp_path}/pop-before-smtp"
    return open_relay_map(spec, postfix_config_dir=cfdir, **kw), spec


@pytest.mark.parametrize("kind", KINDS)
def test_add_remove_visible_to_postmap(kind: str, tmp_path: Path, cfdir: str) -> None:
    rmap, spec = make(kind, tmp_path, cfdir)
    rmap.rebuild([])
    assert lookup(cfdir, spec, "192.0.2.10") == (1, "", "")
    rmap.add(["192.0.2.10", "2001:DB8:0:0::1", "::ffff:198.51.100.7"])
    assert lookup(cfdir, spec, "192.0.2.10") == (0, "OK", "")
    # Postfix looks IPv6 clients up in compressed lower-case form; mapped IPv4 as IPv4.
    assert lookup(cfdir, spec, "2001:db8::1") == (0, "OK", "")
    assert lookup(cfdir, spec, "198.51.100.7") == (0, "OK", "")
    assert dump(cfdir, spec) == {"192.0.2.10": "OK", "2001:db8::1": "OK", "198.51.100.7": "OK"}
    rmap.remove(["192.0.2.10", "2001:db8::1"])
    assert lookup(cfdir, spec, "192.0.2.10") == (1, "", "")
    assert lookup(cfdir, spec, "2001:db8::1") == (1, "", "")
    assert lookup(cfdir, spec, "198.51.100.7") == (0, "OK", "")
    rmap.remove(["203.0.113.99"])          # absent: no error
    assert rmap.check()


@pytest.mark.parametrize("kind", KINDS)
def test_keys_are_nul_terminated(kind: str, tmp_path: Path, cfdir: str) -> None:
    """Keys and values are stored as postmap stores them on Linux: with a trailing NUL."""
    rmap, _ = make(kind, tmp_path, cfdir)
    rmap.rebuild(["192.0.2.44"])
    rmap.add(["2001:db8::77"])
    raw = Path(f"{tmp_path}/pop-before-smtp{SUFFIX[kind]}").read_bytes()
    assert b"192.0.2.44\x00" in raw and b"2001:db8::77\x00" in raw
    assert b"OK\x00" in raw


@pytest.mark.parametrize("kind", KINDS)
def test_rebuild_replaces_contents_and_text_file(kind: str, tmp_path: Path, cfdir: str) -> None:
    text = tmp_path / "pop-before-smtp.txt"
    rmap, spec = make(kind, tmp_path, cfdir, value="permit", text_file=str(text))
    rmap.rebuild(["192.0.2.1", "192.0.2.2"])
    assert text.read_text() == "192.0.2.1\tpermit\n192.0.2.2\tpermit\n"
    rmap.add(["2001:db8::5"])
    rmap.remove(["192.0.2.1"])
    assert text.read_text() == "192.0.2.2\tpermit\n2001:db8::5\tpermit\n"
    rmap.rebuild(["198.51.100.9"])
    assert dump(cfdir, spec) == {"198.51.100.9": "permit"}
    assert lookup(cfdir, spec, "192.0.2.2") == (1, "", "")
    assert text.read_text() == "198.51.100.9\tpermit\n"
    # A fresh RelayMap over an existing map learns the grants from the map itself.
    again, _ = make(kind, tmp_path, cfdir, value="permit", text_file=str(text))
    again.add(["192.0.2.3"])
    assert sorted(text.read_text().splitlines()) == ["192.0.2.3\tpermit", "198.51.100.9\tpermit"]
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


def test_hash_mtime_moves_to_a_new_second_on_every_change(tmp_path: Path, cfdir: str) -> None:
    """Several changes inside one second still give strictly increasing whole-second mtimes."""
    rmap, _ = make("hash", tmp_path, cfdir)
    rmap.rebuild([])
    db = f"{tmp_path}/pop-before-smtp.db"
    seen = [os.stat(db).st_mtime_ns // 1_000_000_000]
    for i in range(4):
        if i % 2:
            rmap.remove(["192.0.2.50"])
        else:
            rmap.add(["192.0.2.50"])
        seen.append(os.stat(db).st_mtime_ns // 1_000_000_000)
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False)), seen


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_addresses_never_reach_the_map(kind: str, tmp_path: Path, cfdir: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    rmap, spec = make(kind, tmp_path, cfdir)
    rmap.rebuild(["192.0.2.1", "bogus"])
    with caplog.at_level(logging.ERROR, logger="logwatchd.relaymap"):
        rmap.add(["10.0.0.1 REJECT", "192.0.2.7\n198.51.100.1", "fe80::1%eth0", "192.0.2.8"])
    assert dump(cfdir, spec) == {"192.0.2.1": "OK", "192.0.2.8": "OK"}
    skipped = [r.getMessage() for r in caplog.records if "reason=invalid-ip" in r.getMessage()]
    assert sum(m.startswith("action=relay-add ") for m in skipped) == 3
    assert sum(m.startswith("action=relay-rebuild ") for m in skipped) == 1
    with pytest.raises(TypeError):
        rmap.add("192.0.2.9")


def test_bad_spec_and_value(tmp_path: Path, cfdir: str) -> None:
    for spec in ("btree:/tmp/x", f"hash:{tmp_path.name}/rel", str(tmp_path / "m"), "cdb:/x"):
        with pytest.raises(RelayMapError, match="relay map"):
            open_relay_map(spec, postfix_config_dir=cfdir)
    for value in ("", "OK\n10.0.0.1 OK", " OK", "Überall"):
        with pytest.raises(RelayMapError, match="value"):
            open_relay_map(f"hash:{tmp_path}/m", value=value, postfix_config_dir=cfdir)


def test_missing_postfix_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RelayMapError, match="main.cf is missing"):
        open_relay_map(f"hash:{tmp_path}/m", postfix_config_dir=str(tmp_path))


def test_dry_run_writes_nothing(tmp_path: Path, cfdir: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="logwatchd.relaymap"):
        rmap, _ = make("hash", tmp_path, cfdir, dry_run=True, text_file=str(tmp_path / "t"))
        rmap.rebuild(["192.0.2.1"])
        rmap.add(["192.0.2.2"])
        rmap.remove(["192.0.2.2"])
    assert list(tmp_path.iterdir()) == []
    assert "action=relay-add ip=192.0.2.2" in caplog.text and "dry_run=1" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_or_missing_map_is_detected_and_rebuilt(kind: str, tmp_path: Path, cfdir: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rmap, spec = make(kind, tmp_path, cfdir)
    path = Path(f"{tmp_path}/pop-before-smtp{SUFFIX[kind]}")
    with caplog.at_level(logging.WARNING, logger="logwatchd.relaymap"):
        assert not rmap.check()
    assert "result=missing" in caplog.text
    with pytest.raises(RelayMapError, match="rebuild needed"):
        rmap.add(["192.0.2.1"])
    assert not path.exists(), "add() must not create a map behind the daemon's back"
    many = [f"10.3.{i // 256}.{i % 256}" for i in range(5000)]
    rmap.rebuild(many)
    assert rmap.check()
    good = path.read_bytes()
    # Garbage, a page-aligned truncation (Berkeley DB itself does not notice), nothing at all.
    half = len(good) // 2 // 4096 * 4096
    for damaged in (b"\x00garbage, not a database\xff" * 300, good[:half], b""):
        path.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="logwatchd.relaymap"):
            assert not rmap.check(), f"{len(damaged)} damaged bytes passed the check"
        assert "result=unreadable" in caplog.text
        rmap.rebuild(["192.0.2.1", "2001:db8::2"])
        assert rmap.check()
        assert lookup(cfdir, spec, "2001:db8::2") == (0, "OK", "")


def test_missing_directory_is_a_clear_error(tmp_path: Path, cfdir: str) -> None:
    with pytest.raises(RelayMapError, match=r"directory .*nope does not exist"):
        open_relay_map(f"hash:{tmp_path}/nope/pop-before-smtp", postfix_config_dir=cfdir)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs mount: unwritable even for root."""
    require("root")                 # mounting a read-only tmpfs
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_unwritable_directory_is_a_clear_error(readonly_dir: Path, cfdir: str) -> None:
    with pytest.raises(RelayMapError, match=r"is not writable: Read-only file system"):
        open_relay_map(f"hash:{readonly_dir}/pop-before-smtp", postfix_config_dir=cfdir)
    with pytest.raises(RelayMapError, match="relay text file"):
        open_relay_map(f"hash:{readonly_dir.parent}/pop-before-smtp", postfix_config_dir=cfdir,
                       text_file=str(readonly_dir / "grants.txt"))


# The reader runs in its own process, as smtpd would: a tight `postmap -q` loop for one key
# that is always present and keys that flap. Any stderr, odd exit code or value is a failure.
_READER = r"""
import json, os, subprocess, sys
cfdir, spec, stop, flappers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
n = bad = 0; errors = []
while not os.path.exists(stop):
    for key in ["198.51.100.1"] + flappers:
        p = subprocess.run(["postmap", "-c", cfdir, "-q", key, spec], capture_output=True,
                           text=True)
        n += 1
        stable = key == "198.51.100.1"
        ok = (p.returncode, p.stdout, p.stderr) in ([(0, "OK\n", "")] if stable
                                                    else [(0, "OK\n", ""), (1, "", "")])
        if not ok:
            bad += 1
            errors.append([key, p.returncode, p.stdout[:80], p.stderr[:200]])
print(json.dumps({"lookups": n, "bad": bad, "errors": errors[:5]}))
"""


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_readers_never_see_errors(kind: str, tmp_path: Path, cfdir: str) -> None:
    rmap, spec = make(kind, tmp_path, cfdir)
    stable = [f"10.1.{i // 256}.{i % 256}" for i in range(2000)] + ["198.51.100.1"]
    rmap.rebuild(stable)
    stop = tmp_path / "stop"
    rounds = [[f"10.9.{r}.{i}" for i in range(100)] for r in range(50)]
    flappers = ",".join([rounds[0][0], rounds[25][50], rounds[49][99]])
    reader = subprocess.Popen([sys.executable, "-c", _READER, cfdir, spec, str(stop), flappers],
                              stdout=subprocess.PIPE, text=True)
    try:
        ops = 0
        previous: list[str] = []
        started = time.monotonic()
        for batch in rounds:       # 50 x (add 100, remove 100) = 10,000 operations
            rmap.add(batch)
            rmap.remove(previous)
            ops += len(batch) + len(previous)
            previous = batch
        rmap.remove(previous)
        ops += len(previous)
        elapsed = time.monotonic() - started
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=120)
    result = json.loads(out)
    assert ops == 10_000
    assert result["bad"] == 0, result["errors"]
    assert result["lookups"] > 20, result     # the reader really ran alongside the writer
    assert set(dump(cfdir, spec)) == set(stable)
    assert elapsed < 120                       # loose bound against pathological behaviour


_HOLD_READ_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.lockf(fd, fcntl.LOCK_SH)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_lmdb_add_waits_for_postfix_readers(tmp_path: Path, cfdir: str) -> None:
    """smtpd's LMDB lookups hold an fcntl read lock; add() must not write underneath them."""
    rmap, spec = make("lmdb", tmp_path, cfdir)
    rmap.rebuild(["192.0.2.1"])
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_READ_LOCK, rmap.spec.file, "0.8"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        rmap.add(["192.0.2.2"])
        waited = time.monotonic() - started
        rmap.remove(["192.0.2.1"])    # postmap -d locks by itself: no deadlock with ours
    finally:
        holder.kill()
        holder.wait()
    assert waited > 0.3, f"add() did not wait for the reader's lock ({waited:.3f} s)"
    assert dump(cfdir, spec) == {"192.0.2.2": "OK"}


def test_lmdb_header_check_with_64k_pages(tmp_path: Path) -> None:
    """LMDB's second meta page is one page in: 64 KiB on ppc64el, past a 16 KiB read."""
    import struct

    from logwatch.effectors.relaymap.lmdb import MAGIC, structure_problem

    page = 65536

    def meta(txnid: int, last_pg: int) -> bytes:
        b = bytearray(page)
        struct.pack_into("<II", b, 16, MAGIC, 1)
        struct.pack_into("<I", b, 40, page)
        struct.pack_into("<QQ", b, 136, last_pg, txnid)
        return bytes(b)

    path = tmp_path / "m.lmdb"
    path.write_bytes(meta(5, 3) + meta(6, 3) + bytes(2 * page))
    assert structure_problem(str(path)) is None
    with open(path, "r+b") as fh:
        fh.truncate(3 * page)
    assert "truncated" in (structure_problem(str(path)) or "")
