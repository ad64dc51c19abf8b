"""Network namespace helpers for tests and benches: create, link with veth, run inside, delete.

Everything created inside a namespace (rules, sets, tables, veth ends) disappears with it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


def can_use_netns() -> bool:
    """Root and the ip tool: what the namespace tests need."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


# Skips without root or iproute2, fails in CI (tests/needs.py).
needs_netns = pytest.mark.needs("root", "ip")


def unique_name(prefix: str = "lwt") -> str:
    """A namespace/interface name unlikely to collide with a parallel run (max 15 chars)."""
    return f"{prefix[:4]}{os.getpid() % 100000}{secrets.token_hex(2)}"[:15]


@dataclass
class Netns:
    """One network namespace, addressed by name."""

    name: str

    def argv(self, argv: list[str]) -> list[str]:
        """The command line that runs argv inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace; raise with its stderr when it fails and check is set."""
        proc = subprocess.run(self.argv(argv), input=stdin, capture_output=True, text=True,
                              check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{argv} in {self.name}: exit {proc.returncode}: {proc.stderr}")
        return proc

    def out(self, argv: list[str]) -> str:
        """Stdout of argv run inside the namespace."""
        return self.run(argv).stdout


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def netns(prefix: str = "lwt") -> Iterator[Netns]:
    """A fresh namespace with loopback up; deleted afterwards whatever happens."""
    ns = Netns(unique_name(prefix))
    _ip("netns", "add", ns.name)
    try:
        ns.run(["ip", "link", "set", "lo", "up"])
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


@dataclass
class Link:
    """Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses on each end."""

    server: Netns
    client: Netns
    server4: str
    server6: str
    client4: list[str]            # client addresses; tests bind to one to pick the source
    client6: list[str]


@contextmanager
def linked_pair(extra_clients: int = 1) -> Iterator[Link]:
    """Server and client namespaces on one veth link (10.x.y.0/24, fd00:x:y::/64)."""
    with netns("lws") as server, netns("lwc") as client:
        a, b = secrets.randbelow(250) + 1, secrets.randbelow(250) + 1
        s_if, c_if = unique_name("vs"), unique_name("vc")
        _ip("link", "add", s_if, "netns", server.name, "type", "veth",
            "peer", "name", c_if, "netns", client.name)
        link = Link(server, client, f"10.{a}.{b}.1", f"fd00:{a}:{b}::1",
                    [f"10.{a}.{b}.{i}" for i in range(2, 3 + extra_clients)],
                    [f"fd00:{a}:{b}::{i}" for i in range(2, 3 + extra_clients)])
        # No duplicate address detection: addresses (link-local too) are usable at once.
        server.run(["sysctl", "-qw", f"net.ipv6.conf.{s_if}.accept_dad=0"])
        client.run(["sysctl", "-qw", f"net.ipv6.conf.{c_if}.accept_dad=0"])
        server.run(["ip", "addr", "add", f"{link.server4}/24", "dev", s_if])
        server.run(["ip", "addr", "add", f"{link.server6}/64", "dev", s_if, "nodad"])
        for addr in link.client4:
            client.run(["ip", "addr", "add", f"{addr}/24", "dev", c_if])
        for addr in link.client6:
            client.run(["ip", "addr", "add", f"{addr}/64", "dev", c_if, "nodad"])
        server.run(["ip", "link", "set", s_if, "up"])
        client.run(["ip", "link", "set", c_if, "up"])
        yield link


_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

_CONNECT = """
import socket, sys
src, dst, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(timeout)
s.bind((src, 0))
try:
    s.connect((dst, port))
except (TimeoutError, OSError) as e:
    print("fail", type(e).__name__)
    sys.exit(1)
print("ok")
"""


@contextmanager
def tcp_listener(ns: Netns, port: int = 25) -> Iterator[subprocess.Popen[str]]:
    """A dual-stack TCP server accepting and closing connections; killed afterwards."""
    proc = subprocess.Popen(ns.argv([sys.executable, "-c", _LISTENER, str(port)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"listener did not start: {proc.stderr.read() if proc.stderr else ''}")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def tcp_connects(ns: Netns, src: str, dst: str, port: int = 25, timeout: float = 0.6) -> bool:
    """Whether a TCP connect from src (inside ns) to dst:port completes within timeout."""
    proc = subprocess.run(ns.argv([sys.executable, "-c", _CONNECT, src, dst, str(port),
                                   str(timeout)]),
                          capture_output=True, text=True, check=False, timeout=timeout + 20)
    return proc.returncode == 0


def wait_until(pred, timeout: float = 5.0, step: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    """Poll pred until it is true or timeout passes; return its last value."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)
