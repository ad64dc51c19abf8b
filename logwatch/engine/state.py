"""The state every Engine mixin works on, declared once: Engine (core.py) sets it all in
__init__/_configure; grants.py, offenders.py, bans.py and logtime.py only read and change it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logwatch.clock import Clock
    from logwatch.daemon.config import BanConfig, RelayConfig
    from logwatch.engine.model import Ban, Effect, Grant
    from logwatch.engine.whitelist import NetSet, Whitelist


class EngineState:
    """Attribute declarations only (no values, no behaviour): the mixins' shared contract."""

    clock: Clock
    relay: RelayConfig
    bancfg: BanConfig
    grants: dict[str, Grant]
    bans: dict[str, Ban]
    whitelist: Whitelist
    _mynetworks: NetSet
    _own: NetSet
    _no_grant: NetSet                       # mynetworks | relay.exclude
    _protected: NetSet                      # never banned: whitelist, mynetworks, own, loopback
    _services: frozenset[str]
    _counters: dict[str, int]
    # offender scoring (offenders.py)
    _tracked: OrderedDict[int, int]         # offender key -> packed hits, LRU first
    _epoch_ms: int
    _kind_index: dict[str, int]
    _kind_names: list[str]
    _uu: int                                # index of user-unknown
    _weights: dict[int, float]
    _v4_prefix: int
    _v6_prefix: int
    _v4_mask: int
    _v6_mask: int
    _find_ms: int
    _distinct_on: bool
    _distinct_ms: int
    _horizon_ms: int
    # bans (bans.py)
    _history: OrderedDict[str, list[float]]  # net -> [bans so far, time of the last]
    _banned_keys: set[int]
    _odd_bans: list[tuple[int, int, int]]
    _odd_set: set[tuple[int, int, int]]

    def _push(self, expires_at: float | None, kind: str, key: str) -> None:
        raise NotImplementedError           # core.Engine: the expiry heap

    def _lift(self, nets: Sequence[str], why: str) -> list[Effect]:
        raise NotImplementedError           # bans.BanBook
