"""Status figures an admin reads: the lag behind the log, and why a start as non-root fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from daemon_harness import REPO, DaemonProc, pyenv

from logwatch.sources import FileTailer
from logwatch.sources.lag import LagMeter, unread_bytes

SYSTEM_PYTHON = "/usr/bin/python3"
LINE = ("Nov 21 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: "
        "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in local recipient "
        "table; from=<s@example.net> to=<a@example.org> proto=ESMTP helo=<g>")


def test_lag_is_zero_while_the_log_is_idle(tmp_path):
    d = DaemonProc(tmp_path).start()
    try:
        d.append(LINE)
        deadline = time.monotonic() + 10
        while d.req(cmd="status")["events"].get("user-unknown", 0) < 1:
            assert time.monotonic() < deadline, d.stderr()
            time.sleep(0.05)
        time.sleep(2.5)          # idle: the old figure (time since the last event) grew here
        st = d.req(cmd="status")
        assert st["lag"] == 0.0 and st["lag_bytes"] == 0, st
        assert "0 (at the end of every log file)" in d.ctl("status").stdout
    finally:
        d.stop()


def test_lag_counts_unread_bytes_and_the_time_since_the_reader_had_everything(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(LINE + "\n")
    chunks: list[bytes] = []
    tailer = FileTailer([str(log)], on_chunk=lambda name, data: chunks.append(data),
                        from_start=True, force_polling=True)
    try:
        tailer.process()
        meter = LagMeter(started=100.0)
        meter.update(100.0, [tailer])
        assert (meter.behind, meter.lag(105.0)) == (0, 0.0)
        with open(log, "a") as fh:
            fh.write(LINE + "\n")
        meter.update(103.0, [tailer])
        assert meter.behind == len(LINE) + 1
        assert meter.lag(107.5) == 7.5          # caught up last at 100.0
        tailer.process()
        meter.update(108.0, [tailer])
        assert (meter.behind, meter.lag(109.0)) == (0, 0.0)
        assert b"".join(chunks).count(b"\n") == 2
    finally:
        tailer.close()
    assert unread_bytes([]) is None              # journal or stdin only: no figure


def _nobody_can_run_the_tree() -> bool:
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import yaml, psutil, logwatch.daemon.app"],
                               user="nobody", capture_output=True, env=pyenv(), cwd="/",
                               timeout=60)
    except OSError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as nobody")
def test_start_as_non_root_says_why():
    if not _nobody_can_run_the_tree():
        pytest.skip("nobody cannot import logwatch from this tree with the system python3")
    # Not under pytest's tmp dir: that one is root's alone (0700), nobody could not read it.
    base = Path(tempfile.mkdtemp(prefix="lwd-nonroot-"))
    try:
        _start_as_nobody(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start_as_nobody(base: Path) -> None:
    os.chmod(base, 0o755)
    state = base / "state"
    state.mkdir(mode=0o700)                  # like /var/lib/logwatchd: root's
    (base / "mail.log").write_text("")
    os.chmod(base / "mail.log", 0o644)
    run_dir = base / "run"
    run_dir.mkdir(mode=0o777)
    cfg = {
        "sources": {"logfiles": [str(base / "mail.log")]},
        "rules": {"dirs": [str(REPO / "rules")], "local_dir": None},
        "relay": {"enabled": False}, "bans": {"enabled": False, "whitelist": None},
        "watchdog": {"enabled": False},
        "daemon": {"state_dir": str(state), "socket": str(run_dir / "ctl.sock"),
                   "log": "stderr", "actions_log": None},
    }
    conf = base / "lw.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    os.chmod(conf, 0o644)
    proc = subprocess.run([SYSTEM_PYTHON, "-m", "logwatch.daemon.app", "--config", str(conf)],
                          user="nobody", capture_output=True, text=True, env=pyenv(), cwd="/",
                          timeout=60)
    assert proc.returncode == 1
    assert "unable to open database file" in proc.stderr or "Permission denied" in proc.stderr
    assert "runs as nobody" in proc.stderr and "not root" in proc.stderr, proc.stderr
    assert f"write access to {state}" in proc.stderr and "daemon.state_dir" in proc.stderr
