"""Runs a real logwatchd process for the daemon, control and end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from tailmode import POLL_INTERVAL, polling_forced

from logwatch.services.control import request

REPO = Path(__file__).resolve().parent.parent


def pyenv() -> dict[str, str]:
    """Environment that imports logwatch from this source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def postfix_config_dir(base: Path) -> Path:
    """A minimal Postfix config dir: postmap needs a main.cf, the system may have none."""
    d = base / "postfix"
    d.mkdir(exist_ok=True)
    (d / "main.cf").write_text("compatibility_level = 3.6\n")
    return d


class DaemonProc:
    """One logwatchd process on a config in a temp dir (optionally inside a netns)."""

    def __init__(self, base: Path, settings: dict[str, Any] | None = None,
                 netns: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.base = base
        self.netns = netns
        self.extra_args = extra_args
        self.log = base / "mail.log"
        self.log.touch()
        self.socket = str(base / "control.sock")
        self.pfdir = postfix_config_dir(base)
        self.map = f"hash:{base / 'relay'}"
        self.settings: dict[str, Any] = {
            "sources": {"logfiles": [str(self.log)]},
            "rules": {"dirs": [str(REPO / "rules")], "local_dir": None},
            "relay": {"map": self.map, "mynetworks": []},
            "bans": {"whitelist": str(base / "whitelist")},
            "firewall": {"backend": "none"},
            "watchdog": {"enabled": False},
            "daemon": {"state_dir": str(base / "state"), "socket": self.socket,
                       "log": "stderr", "actions_log": str(base / "actions.log")},
            # Never the real /etc/postfix table, whether a test turns accounting on or not.
            "accounting": {"sasl_access_map": f"hash:{base / 'sasl-access'}"},
        }
        if polling_forced():          # tests/tailmode.py: keep polled tests short
            self.settings["sources"]["poll_interval"] = POLL_INTERVAL
        for section, values in (settings or {}).items():
            self.settings.setdefault(section, {}).update(values)
        self.config = base / "logwatchd.yaml"
        self.write_config()
        self.stderr_path = base / "daemon.stderr"
        self.proc: subprocess.Popen | None = None

    def write_config(self, text: str | None = None) -> None:
        self.config.write_text(text if text is not None else yaml.safe_dump(self.settings))

    def env(self) -> dict[str, str]:
        env = pyenv()
        env["MAIL_CONFIG"] = str(self.pfdir)
        return env

    def start(self, wait: bool = True) -> DaemonProc:
        argv = [sys.executable, "-m", "logwatch.daemon.app", "--config", str(self.config),
                *self.extra_args]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self._stderr = open(self.stderr_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, env=self.env(), cwd=str(self.base))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"logwatchd exited with {self.proc.returncode}:\n"
                                     + self.stderr())
            if "action=start " in self.stderr() and os.path.exists(self.socket):
                try:
                    if request(self.socket, {"cmd": "status"}, timeout=5).get("ok"):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError("logwatchd did not become ready:\n" + self.stderr())

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10.0, after: int = 0) -> str:
        """Wait until the daemon's stderr (from offset `after`) holds needle; return that text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr()[after:]
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged:\n{self.stderr()[after:]}")

    def req(self, **kw: Any) -> dict[str, Any]:
        return request(self.socket, kw, timeout=30)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "logwatch.cli.ctl", "--socket", self.socket, *args],
                              capture_output=True, text=True, env=self.env(), timeout=60)

    def append(self, *lines: str) -> None:
        with open(self.log, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Send sig, wait for the exit; return the seconds it took."""
        if self.proc is None:
            return 0.0
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elapsed = time.monotonic() - start
        self._stderr.close()
        self.proc = None
        return elapsed

    def kill9(self) -> None:
        """kill -9 the daemon itself (inside `ip netns exec`, the exec'd python is the child)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._stderr.close()
        self.proc = None


def socket_accepts(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()
