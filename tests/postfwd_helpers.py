"""A private postfwd2 policy server (Debian package postfwd) for tests and the policy bench.

    with postfwd_server(RATE_RULE) as pfw:          # root; a free port on 127.0.0.1
        PolicyHook(pfw.endpoint)                    # "inet:127.0.0.1:PORT" for Postfix

postfwd2 cannot serve the network in the foreground (--nodaemon disables rate limits: no
cache daemon), so it daemonizes with its pid file, cache socket and rules in a private
directory; on exit its master and every process of its session are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from postfix_helpers import free_port

# Recipients per client address and minute, counted at RCPT: the harness test's quota.
RATE_RULE = ("id=RCPT-QUOTA; protocol_state==RCPT; "
             "action=rate(client_address/3/60/DEFER_IF_PERMIT 4.7.1 over quota)")


def rate_rule(key: str, limit: int, period: int, rule_id: str = "QUOTA") -> str:
    """One postfwd rule: more than `limit` RCPT requests per `key` in `period` s are deferred."""
    return (f"id={rule_id}; protocol_state==RCPT; "
            f"action=rate({key}/{limit}/{period}/DEFER_IF_PERMIT 4.7.1 over quota)")


@dataclass
class Postfwd:
    """A running postfwd2: where it listens and the processes it consists of."""

    root: str
    address: str
    port: int
    pids: set[int] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"inet:{self.address}:{self.port}"

    def master_pid(self) -> int | None:
        try:
            return int(Path(self.root, "postfwd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def processes(self) -> list[psutil.Process]:
        """The master and all its descendants (cache, policy parent, children)."""
        pid = self.master_pid()
        if pid is None:
            return []
        try:
            master = psutil.Process(pid)
            return [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> tuple[int, int]:
        """RSS and USS (pages no other process shares) summed over all its processes."""
        rss = uss = 0
        for proc in self.processes():
            try:
                info = proc.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss += info.rss
            uss += info.uss
        return rss, uss


@contextmanager
def postfwd_server(rules: str, address: str = "127.0.0.1", servers: int = 10,
                   timeout: float = 30.0) -> Iterator[Postfwd]:
    """Run postfwd2 with `rules` (text in its rule syntax) and up to `servers` policy children.

    Each persistent client connection occupies one child: give at least as many as clients.
    """
    root = tempfile.mkdtemp(prefix="lw-postfwd-")
    os.chmod(root, 0o1777)           # postfwd drops to nobody; its cache socket lives here
    rules_file = Path(root, "rules.cf")
    rules_file.write_text(rules.strip() + "\n")
    os.chmod(rules_file, 0o644)
    pfw = Postfwd(root, address, free_port(address))
    argv = ["postfwd2", "--file", str(rules_file),
            "--server_socket", f"tcp:{address}:{pfw.port}",
            "--cache_socket", f"unix::{root}/cache.sock",
            "--pidfile", f"{root}/postfwd.pid", "--user", "nobody", "--group", "nogroup",
            "--nodns", "--noidlestats", "--norulestats", "--perfmon",
            # Net::Server refuses max_spare_servers >= max_servers (and then never listens).
            "--min_servers", str(servers), "--max_servers", str(servers + 10),
            "--min_spare_servers", "1", "--max_spare_servers", str(servers + 9)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"postfwd2 failed ({done.returncode}): {done.stderr}")
        _wait_ready(pfw, timeout)
        pfw.pids = {p.pid for p in pfw.processes()}
        yield pfw
    finally:
        _stop(pfw)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(pfw: Postfwd, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((pfw.address, pfw.port), timeout=1) as s:
                s.sendall(b"request=smtpd_access_policy\nprotocol_state=CONNECT\n\n")
                if s.recv(100).startswith(b"action="):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"postfwd2 not answering on {pfw.endpoint}")
        time.sleep(0.1)


def _stop(pfw: Postfwd) -> None:
    """TERM the master, then TERM/KILL whatever of its processes is left (by recorded pid)."""
    procs = {p.pid: p for p in pfw.processes()}
    for pid in pfw.pids:
        if pid not in procs:
            try:
                procs[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
    master = pfw.master_pid()
    if master is not None and master in procs:
        try:
            os.kill(master, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
