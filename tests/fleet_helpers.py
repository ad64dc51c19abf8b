"""Fleet test helpers: logwatchd nodes sharing one PostgreSQL store, each in its own network
namespace with its own log and iptables, and the shipped pgsql: table pointed at the server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon_harness import DaemonProc
from netns import Netns, netns
from pgserver import PgServer

REPO = Path(__file__).resolve().parent.parent
CHAIN = "LWFLEET"


def stamp() -> str:
    now = datetime.now()
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


def login(ip: str, user: str = "alice") -> str:
    return (f"{stamp()} mx dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.1, mpid=4242, TLS, session=<a1b2c3d4>")


def unknown_user(ip: str, user: str) -> str:
    return (f"{stamp()} mx postfix/smtpd[2345]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
            f"550 5.1.1 <{user}@example.org>: Recipient address rejected: User unknown in local "
            f"recipient table; from=<spam@example.net> to=<{user}@example.org> proto=ESMTP "
            f"helo=<guess>")


def pgsql_table(pg: PgServer, path: Path, shipped: str = "logwatchd-grants.cf") -> str:
    """A shipped etc/ table file (the grants' by default) with this server's address; the
    map spec."""
    lines = []
    for line in (REPO / "etc" / shipped).read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "hosts":
            line = f"hosts = inet:127.0.0.1:{pg.port}"
        elif key == "user":
            line = "user = postgres"
        elif key == "password":
            continue
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return f"pgsql:{path}"


def drops(ns: Netns) -> list[str]:
    """Source nets of the DROP rules in our chain (IPv4 and IPv6), duplicates kept."""
    nets = []
    for tool in ("iptables", "ip6tables"):
        out = subprocess.run(ns.argv([tool, "-w", "-S", CHAIN]), capture_output=True, text=True,
                             check=False)
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts[:2] == ["-A", CHAIN] and "DROP" in parts and "-s" in parts:
                nets.append(parts[parts.index("-s") + 1])
    return nets


def node_settings(pg: PgServer, name: str, firewall: str = "iptables",
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "store": {"url": pg.url(), "node": name, "sync_interval": 5},
        "firewall": {"backend": firewall, "chain": CHAIN, "ports": [25]},
        "bans": {"maxretry": 5, "findtime": 600, "bantime": 3600},
    }
    for section, values in (extra or {}).items():
        settings.setdefault(section, {}).update(values)
    return settings


@contextmanager
def fleet(pg: PgServer, base: Path, names: tuple[str, ...] = ("a", "b", "c"),
          firewall: str = "iptables", extra: dict[str, Any] | None = None,
          ) -> Iterator[dict[str, tuple[DaemonProc, Netns]]]:
    """One started logwatchd per name, each in a namespace of its own; all stopped after."""
    with ExitStack() as stack:
        nodes: dict[str, tuple[DaemonProc, Netns]] = {}
        for name in names:
            ns = stack.enter_context(netns(f"lwf{name}"))
            d = base / name
            d.mkdir(parents=True)
            proc = DaemonProc(d, node_settings(pg, name, firewall, extra), netns=ns.name)
            stack.callback(proc.stop)
            nodes[name] = (proc, ns)
        for proc, _ns in nodes.values():
            proc.start(wait=False)
        for proc, _ns in nodes.values():
            proc.wait_ready()
        yield nodes
