"""Backend none (and every dry run): executes nothing, logs what it would do."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from logwatch.effectors.firewall.base import Firewall
from logwatch.effectors.firewall.entry import FIREWALLS, FirewallBackend
from logwatch.engine.model import Ban

if TYPE_CHECKING:
    from logwatch.daemon.config import FirewallConfig


class NoneFirewall(Firewall):
    """Executes nothing: logs what it would do and tracks the would-be state in memory."""

    backend = "none"

    def __init__(self, cfg: FirewallConfig, dry_run: bool = True,
                 log: logging.Logger | None = None, netns: str | None = None,
                 would_be: str = "none", **kwargs: Any) -> None:
        super().__init__(cfg, dry_run=True, log=log, netns=netns, **kwargs)
        self.would_be = would_be
        self._held: dict[str, float | None] = {}

    def setup(self) -> None:
        self.log.info("action=fw-setup backend=%s dry_run=1 ports=%s", self.would_be,
                      ",".join(map(str, self.ports)))

    def ban(self, bans: Sequence[Ban]) -> None:
        now = self.clock()
        for text, (_net, left) in self._live(bans, now).items():
            self._held[text] = None if left is None else now + left
            self.log.info("action=fw-ban backend=%s dry_run=1 net=%s timeout=%s",
                          self.would_be, text, "permanent" if left is None else left)

    def unban(self, nets: Sequence[str]) -> None:
        for text in self._nets(nets):
            self._held.pop(text, None)
            self.log.info("action=fw-unban backend=%s dry_run=1 net=%s", self.would_be, text)

    def reconcile(self, bans: Sequence[Ban], now: float) -> None:
        live = self._live(bans, now)
        self._held = {t: None if left is None else now + left for t, (_n, left) in live.items()}
        self.log.info("action=fw-reconcile backend=%s dry_run=1 count=%d", self.would_be, len(live))

    def listing(self) -> set[str]:
        now = self.clock()
        return {t for t, exp in self._held.items() if exp is None or exp > now}

    def flush(self) -> None:
        self._held.clear()
        self.log.info("action=fw-flush backend=%s dry_run=1", self.would_be)


FIREWALLS.register("none", FirewallBackend("none", factory=None))
