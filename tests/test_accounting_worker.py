"""The accounting process (daemon/accountingworker.py) of a real logwatchd: a kill -9 of it in
a burst (restarted, every message exactly once), a kill -9 of the daemon (it ends with it),
--stdin's end of input (drained before the daemon stops; a kill of it meanwhile loses and
repeats nothing), a reload reaching it, and its counters in `status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_harness import DaemonProc
from test_accounting_daemon import BURST, kill_9_in_a_burst, stats_lines, wait_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from messagelog import generate_lines  # noqa: E402


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def worker_pid(d: DaemonProc) -> int:
    pid = d.req(cmd="status")["accounting"]["worker"]["pid"]
    assert pid and pid != d.proc.pid
    return pid


def settings(base: Path) -> dict[str, object]:
    """Accounting on; the suspensions the bursts cause go to a table of the test's own."""
    return {"enabled": True, "stats_log": str(base / "stats.log"),
            "sasl_access_map": f"hash:{base / 'sasl'}"}


@pytest.fixture
def daemon(tmp_path: Path):
    d = DaemonProc(tmp_path, {"accounting": settings(tmp_path)})
    try:
        yield d
    finally:
        d.stop(signal.SIGKILL) if d.proc and d.proc.poll() is None else None


def assert_exactly_once(found: list[dict[str, str]], count: int) -> None:
    queue_ids = [f["queue_id"] for f in found]
    assert len(queue_ids) == len(set(queue_ids)) == count, len(queue_ids)
    assert [int(f["seq"]) for f in found] == list(range(1, count + 1))


def test_kill_9_of_the_accounting_process_in_a_burst(daemon: DaemonProc, tmp_path: Path) -> None:
    """Killed half way: the daemon logs it, counts it, starts another, which goes on from its
    own positions: every message once, and the risk engine still gets the records."""
    stats = tmp_path / "stats.log"
    lines = list(generate_lines(BURST, seed=8, window=30))
    daemon.start()
    first = worker_pid(daemon)
    half = len(lines) // 2
    daemon.append(*lines[:half])
    wait_for(lambda: len(stats_lines(stats)) > 100, what="the first stats lines")
    daemon.append(*lines[half:half + 3000])
    os.kill(first, signal.SIGKILL)
    daemon.append(*lines[half + 3000:])
    daemon.wait_log("action=accounting-worker-died")
    wait_for(lambda: len(stats_lines(stats)) >= BURST, timeout=90, what=f"{BURST} stats lines")
    time.sleep(1.5)                              # nothing more may come
    assert_exactly_once(stats_lines(stats), BURST)
    st = daemon.req(cmd="status")
    acct = st["accounting"]
    assert acct["worker"]["restarts"] == 1 and acct["worker"]["deaths"] == 1
    assert worker_pid(daemon) != first and not alive(first)
    assert any("accounting process died" in e["message"] for e in st["errors"])
    assert acct["open"] == 0 and acct["written_seq"] == BURST
    # Its counters go on from the dead process's (monotonic for /metrics).
    assert sum(acct["messages"].values()) >= BURST
    assert st["risk"]["accounts"] > 0          # records reached the risk engine


def test_kill_9_of_the_daemon_ends_the_accounting_process(daemon: DaemonProc,
                                                         tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: no orphan goes on appending to the stats log; the restart is exact."""
    pids: list[int] = []
    real_start = daemon.start

    def start(wait: bool = True) -> DaemonProc:
        real_start(wait)
        pids.append(worker_pid(daemon))
        return daemon

    daemon.start = start  # type: ignore[method-assign]
    kill_9_in_a_burst(daemon, tmp_path / "stats.log")
    assert len(pids) == 2 and not alive(pids[0])


def stdin_daemon(d: DaemonProc, *args: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(d.config), "--stdin",
            *args]
    err = open(d.stderr_path, "a")  # noqa: SIM115 - the process holds it
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=err, stderr=err, env=d.env(),
                            cwd=str(d.base))


def test_stdin_end_of_input_drains_the_accounting_first(tmp_path: Path) -> None:
    """--stdin: the daemon forwards its chunks; at the end of input it stops only after the
    accounting process committed and wrote every record (a kill -9 of that process on the
    way loses and repeats nothing: the chunks it had not committed are sent again)."""
    stats = tmp_path / "stats.log"
    d = DaemonProc(tmp_path, {"accounting": settings(tmp_path), "sources": {"logfiles": []}})
    lines = list(generate_lines(BURST, seed=9, window=30))
    proc = stdin_daemon(d)
    try:
        assert proc.stdin is not None
        half = len(lines) // 2
        proc.stdin.write("".join(line + "\n" for line in lines[:half]).encode())
        proc.stdin.flush()
        wait_for(lambda: len(stats_lines(stats)) > 100, what="the first stats lines")
        line = next(x for x in d.wait_log("action=accounting-start ").splitlines()
                    if "action=accounting-start " in x)
        pid = int(line.split("logwatchd[", 1)[1].split("]")[0])
        os.kill(pid, signal.SIGKILL)
        proc.stdin.write("".join(line + "\n" for line in lines[half:]).encode())
        proc.stdin.close()
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = d.stderr()
    assert "action=accounting-worker-died" in text
    assert text.index("action=accounting-stop ") < text.index("action=stop reason=end-of-input")
    assert_exactly_once(stats_lines(stats), BURST)


def test_stdin_next_to_a_file_each_once(tmp_path: Path) -> None:
    """--stdin and a followed file: the stdin chunks are forwarded, the file's are not (the
    accounting process reads the file itself)."""
    stats = tmp_path / "stats.log"
    d = DaemonProc(tmp_path, {"accounting": settings(tmp_path)})
    d.append(*generate_lines(20, seed=11))
    d.settings["sources"]["from_start"] = True
    d.write_config()
    proc = stdin_daemon(d, "--logfile", str(d.log))
    try:
        wait_for(lambda: len(stats_lines(stats)) >= 20, what="the file's 20 records")
        assert proc.stdin is not None
        proc.stdin.write("".join(line + "\n" for line in generate_lines(30, seed=12)).encode())
        proc.stdin.close()         # the file goes on: the daemon does not stop
        wait_for(lambda: len(stats_lines(stats)) >= 50, what="50 records")
        time.sleep(1.5)                          # nothing more may come
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    found = stats_lines(stats)
    assert len(found) == 50 and [int(f["seq"]) for f in found] == list(range(1, 51))


def test_reload_reaches_the_accounting_process(daemon: DaemonProc, tmp_path: Path) -> None:
    """SIGHUP: the rules are reloaded in it; a new stats_log: a new process writes there,
    numbering on, nothing lost or repeated."""
    daemon.start()
    first = worker_pid(daemon)
    lines = list(generate_lines(40, seed=10))
    daemon.append(*lines[:160])
    wait_for(lambda: daemon.req(cmd="status")["accounting"]["written_seq"] >= 10,
             what="the first records")
    mark = len(daemon.stderr())
    daemon.send(signal.SIGHUP)
    daemon.wait_log("action=accounting-reload rules=", after=mark)
    assert worker_pid(daemon) == first
    daemon.settings["accounting"]["stats_log"] = str(tmp_path / "new.log")
    daemon.write_config()
    mark = len(daemon.stderr())
    daemon.send(signal.SIGHUP)
    daemon.wait_log("action=accounting-worker-restarted", after=mark)
    assert "key=accounting.stats_log" not in daemon.stderr()[mark:]
    assert worker_pid(daemon) != first and not alive(first)
    daemon.append(*lines[160:])
    wait_for(lambda: daemon.req(cmd="status")["accounting"]["written_seq"] == 40,
             what="40 records")
    old, new = stats_lines(tmp_path / "stats.log"), stats_lines(tmp_path / "new.log")
    assert old and new
    assert sorted(int(f["seq"]) for f in old + new) == list(range(1, 41))


def test_status_shows_the_accounting_process_counters(daemon: DaemonProc) -> None:
    daemon.start()
    daemon.append(*generate_lines(30, seed=2))
    wait_for(lambda: daemon.req(cmd="status")["accounting"]["written_seq"] == 30,
             what="30 records")
    acct = daemon.req(cmd="status")["accounting"]
    assert acct["parser"]["lines"] >= 30 * 7 and acct["parser"]["matched"] > 0
    assert acct["messages"]["sent"] + acct["messages"]["received"] == 30
    assert acct["process"]["pid"] == acct["worker"]["pid"] != daemon.proc.pid
    assert acct["process"]["cpu"] > 0 and acct["process"]["rss_kb"] > 0
    assert acct["worker"]["restarts"] == 0
