"""Packets really drop: a banned client's SYN to port 25 is dropped, others still connect."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from netns import Link, linked_pair, needs_netns, tcp_connects, tcp_listener, wait_until

from logwatch.daemon.config import FirewallConfig
from logwatch.effectors.firewall import make_firewall
from logwatch.engine.model import Ban

pytestmark = needs_netns


@pytest.fixture
def link() -> Iterator[Link]:
    with linked_pair(extra_clients=1) as lk, tcp_listener(lk.server, 25), \
            tcp_listener(lk.server, 2525):
        yield lk


def connects(link: Link, src: str, port: int = 25) -> bool:
    dst = link.server6 if ":" in src else link.server4
    return tcp_connects(link.client, src, dst, port, timeout=0.5)


@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_banned_client_is_dropped(link: Link, backend: str) -> None:
    fw = make_firewall(FirewallConfig(backend=backend, ports=[25, 465]), netns=link.server.name)
    bad4, good4 = link.client4[0], link.client4[1]
    bad6, good6 = link.client6[0], link.client6[1]
    for src in (bad4, good4, bad6, good6):
        # The first SYN may wait for neighbour discovery: allow a few tries before any ban.
        assert wait_until(lambda src=src: connects(link, src), timeout=5), f"{src} never connects"

    fw.setup()
    ttl = None if backend == "iptables" else 3.0   # iptables: expiry is the daemon's unban
    now = time.time()
    fw.ban([Ban(f"{bad4}/32", now, None if ttl is None else now + ttl),
            Ban(f"{bad6}/128", now, None if ttl is None else now + ttl)])
    assert not connects(link, bad4) and not connects(link, bad6)
    assert connects(link, good4) and connects(link, good6)
    assert connects(link, bad4, port=2525), "only the mail ports are blocked"

    if ttl is None:
        fw.unban([bad4, bad6])
    # After the unban (or the kernel's expiry) the banned client gets through again.
    assert wait_until(lambda: connects(link, bad4) and connects(link, bad6), timeout=8)
    assert fw.listing() == set()


@pytest.mark.parametrize("backend", ["iptables", "ipset", "nftables"])
def test_ipv6_prefix_ban_covers_the_whole_64(link: Link, backend: str) -> None:
    fw = make_firewall(FirewallConfig(backend=backend), netns=link.server.name)
    for src in (link.client4[0], *link.client6):
        assert wait_until(lambda src=src: connects(link, src), timeout=5), f"{src} never connects"
    prefix = link.client6[0].rsplit("::", 1)[0] + "::/64"
    fw.ban([Ban(prefix, time.time(), None)])
    assert not connects(link, link.client6[0]) and not connects(link, link.client6[1])
    assert connects(link, link.client4[0])
    fw.flush()
    assert connects(link, link.client6[0])
