"""A real Postfix smtpd consults our map: relay denied, allowed after add(), denied after remove().

Changes land in the same second as the previous change and as the smtpd's last session, the
case where an in-place hash: update without a new mtime second stays invisible to a reused
smtpd (demonstrated by the control test at the end).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from postfix_helpers import (
    PostfixInstance,
    RelayProbe,
    postfix_config_dir,
    postfix_instance,
    try_relay,
)

from logwatch.effectors.relaymap import RelayMap, open_relay_map

CLIENT = "127.0.0.5"          # the SMTP client's source address; not in the instance's mynetworks
ALLOWED, DENIED = 250, 554

# Root and an installed postfix to run a private instance.
pytestmark = pytest.mark.needs("root", "postfix")


@contextmanager
def _running(kind: str, tmp_path: Path) -> Iterator[tuple[str, RelayMap, PostfixInstance]]:
    mapdir = tmp_path / "map"
    mapdir.mkdir()
    os.chmod(tmp_path, 0o755)
    spec = f"{kind}:{mapdir}/pop-before-smtp"
    with postfix_config_dir() as cfdir:
        rmap = open_relay_map(spec, postfix_config_dir=cfdir)
        rmap.rebuild(["192.0.2.1"])
        with postfix_instance(spec) as inst:
            yield kind, rmap, inst


@pytest.fixture(params=["hash", "lmdb"])
def setup(request: pytest.FixtureRequest,
          tmp_path: Path) -> Iterator[tuple[str, RelayMap, PostfixInstance]]:
    with _running(request.param, tmp_path) as running:
        yield running


@pytest.fixture
def hash_setup(tmp_path: Path) -> Iterator[tuple[str, RelayMap, PostfixInstance]]:
    with _running("hash", tmp_path) as running:
        yield running


def _probe(inst: PostfixInstance, expect: int, what: str) -> RelayProbe:
    got = try_relay(inst, CLIENT)
    assert got.code == expect, f"{what}: RCPT answered {got.code} {got.message}\n" \
        f"{inst.maillog()[-2000:]}"
    assert got.smtpd_pid is not None
    return got


def test_relay_follows_the_map_within_one_second(
        setup: tuple[str, RelayMap, PostfixInstance]) -> None:
    kind, rmap, inst = setup
    first = _probe(inst, DENIED, "before any grant")
    again = _probe(inst, DENIED, "before any grant, second session")
    assert again.smtpd_pid == first.smtpd_pid, "smtpd must be reused between sessions"

    for _attempt in range(5):
        # Start early in a second so that the whole sequence fits inside it.
        time.sleep(1.0 - time.time() % 1.0 + 0.02)
        t0 = time.time()
        steps: list[tuple[str, RelayProbe]] = [("open", _probe(inst, DENIED, "initial"))]
        rmap.add([CLIENT])
        steps.append(("add", _probe(inst, ALLOWED, "right after add()")))
        rmap.remove([CLIENT])
        steps.append(("remove", _probe(inst, DENIED, "right after remove()")))
        rmap.add([CLIENT])
        steps.append(("add again", _probe(inst, ALLOWED, "right after a second add()")))
        rmap.remove([CLIENT])
        steps.append(("remove again", _probe(inst, DENIED, "right after a second remove()")))
        if int(time.time()) == int(t0):
            break
    else:
        pytest.fail("could not fit the add/remove sequence into one second in 5 attempts")

    pids = [p.smtpd_pid for _, p in steps]
    if kind == "lmdb":
        # LMDB readers see each committed transaction: the very same smtpd answers correctly.
        assert len(set(pids)) == 1, pids
    else:
        # Berkeley DB keeps a private page cache: smtpd sees the change because the new mtime
        # second makes it exit before the next accept, and a fresh smtpd opens the new map.
        assert len(set(pids)) == len(pids), pids
        assert inst.maillog().count("has changed -- restarting") >= 4

    # A full rebuild (new file renamed over the old one) is seen at once as well.
    rmap.rebuild([CLIENT, "2001:db8::1"])
    _probe(inst, ALLOWED, "right after rebuild() with the client")
    rmap.rebuild([])
    _probe(inst, DENIED, "right after rebuild() without the client")


def test_in_place_change_without_new_mtime_is_invisible_to_a_reused_smtpd(
        hash_setup: tuple[str, RelayMap, PostfixInstance]) -> None:
    """Control: the trap is real, so the test above would catch a writer that falls into it."""
    _, rmap, inst = hash_setup
    first = _probe(inst, DENIED, "before the raw change")
    db = Path(rmap.spec.file)
    st = db.stat()
    subprocess.run(["postmap", "-c", inst.config_dir, "-i", str(rmap.spec)],
                   input=f"{CLIENT} OK\n", text=True, check=True)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))       # "same second": mtime unchanged
    stale = try_relay(inst, CLIENT)
    assert (stale.code, stale.smtpd_pid) == (DENIED, first.smtpd_pid), stale
    # Our writer's next change (here: re-adding the same key) makes it visible.
    rmap.add([CLIENT])
    fresh = _probe(inst, ALLOWED, "after RelayMap.add()")
    assert fresh.smtpd_pid != first.smtpd_pid
