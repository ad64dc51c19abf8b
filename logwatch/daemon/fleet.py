"""The fleet: logwatchd nodes sharing one PostgreSQL store. Bans any node writes reach every
node's firewall (LISTEN/NOTIFY, and a reconcile against the ban table at start, after a lost
connection and every store.sync_interval); failure hits are shared so scores add up.

Why no worker thread: the notification connection is a second psycopg connection whose socket
sits on the daemon's selector like a log source; reading it never blocks (consume_input +
notifies). What can block is bounded: connecting (pgdb.CONNECT_TIMEOUT) and the store's
statements (server-side statement_timeout, TCP user timeout, and pgdb.HangGuard for a server
that hangs); while the server is away the store's writes are held by Effects and replayed by
its resync, and the log side keeps running."""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from logwatch.daemon.fleetrisk import FleetRisk, risk_items
from logwatch.parsing.events import FAILURE_KINDS, Event, normalize_ip
from logwatch.state.backends import CHANNEL, PAYLOAD_MAX

log = logging.getLogger("logwatchd.fleet")

START_SYNC = 2.0          # seconds after start of the first reconcile with the table
HEARTBEAT = 10.0          # seconds between the node's "alive" row updates
PEER_RECENT = 60.0        # a peer seen within this many seconds is listed as recent
RETRY_MIN, RETRY_MAX = 0.5, 8.0
MAX_FIELD = 256           # longest user/service text taken from a peer's hit
# Hit announcements not yet sent (the store away): kept, oldest dropped beyond this many
# payloads (each up to PAYLOAD_MAX bytes, about 100 hits: some 200,000 hits, 14 MB).
BACKLOG_MAX = 2000
SEEN_MAX = 4096           # announcement ids remembered per peer (a resent one is skipped)

class FleetSync:
    """One per daemon with a shared store; the loop calls on_readable and the fleet timers."""

    def __init__(self, daemon: Any) -> None:
        self.d = daemon
        self.node: str = daemon.store.node_key
        self.conn: Any = None
        self.fd: int | None = None   # the socket's fd (psycopg refuses fileno() once lost)
        from logwatch.state.pgdb import HangGuard

        self.guard = HangGuard()
        self.retry = RETRY_MIN
        self.stats = {"bans_adopted": 0, "bans_dropped": 0, "hits_sent": 0, "hits_received": 0,
                      "notifications": 0, "reconciles": 0, "bad_payloads": 0,
                      "hits_queued": 0, "hits_dropped": 0, "hits_repeated": 0}
        # Hit payloads waiting for the store, each with its id "incarnation:n" given once: a
        # payload resent after an ambiguous failure is recognised (and skipped) by the peers.
        self.backlog: deque[tuple[str, int]] = deque()
        self._ids = itertools.count(1)
        self._incarnation = f"{daemon.counters.started:.6f}"
        self._seen: dict[str, tuple[set[str], deque[str]]] = {}
        self.risk = FleetRisk(daemon, self.stats)
        loop = daemon.loop
        loop.on_timer("fleet-listen", lambda now: self.connect())
        loop.on_timer("fleet-sync", self._on_sync)
        loop.on_timer("fleet-beat", self._on_beat)

    # -- the notification connection ----------------------------------------------

    def connect(self, reconcile: bool = True) -> bool:
        """(Re)open the LISTEN connection; then reconcile (notifications may have been lost;
        not at start: the engine was just loaded from the table)."""
        from logwatch.state.pgdb import HANG_TIMEOUT, open_connection

        self.d.loop.cancel("fleet-listen")
        self._close()
        try:
            conn = open_connection(self.d.store.backend.url, self.node)
            self.guard.arm(conn.pgconn.socket, HANG_TIMEOUT)
            try:
                conn.execute(f"LISTEN {CHANNEL}")
            finally:
                self.guard.disarm()
        except Exception as exc:
            self.retry = min(self.retry * 2, RETRY_MAX)
            self.d.loop.call_at("fleet-listen", self.d.clock() + self.retry)
            log.error("action=fleet-listen result=failed retry_in=%.0f error=%s", self.retry,
                      str(exc).strip())
            return False
        self.conn, self.fd, self.retry = conn, conn.fileno(), RETRY_MIN
        self.d.loop.register(self.fd, self.on_readable)
        log.info("action=fleet-listen result=ok node=%s", self.node)
        if reconcile:
            self.reconcile()
        return True

    def _close(self) -> None:
        if self.fd is not None:
            self.d.loop.unregister(self.fd)
            self.fd = None
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def on_readable(self, mask: int = 0) -> None:
        """Drain the notifications the socket holds (never waits for more)."""
        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()    # raises when the connection is gone
            payloads = []
            while (note := pgconn.notifies()) is not None:
                payloads.append(note.extra.decode(errors="replace"))
        except Exception as exc:
            log.error("action=fleet-listen result=lost error=%s", exc)
            self._close()
            self.d.loop.call_at("fleet-listen", self.d.clock() + self.retry)
            return
        try:
            self.handle(payloads)
        except Exception as exc:   # the store went away meanwhile: the reconcile repairs
            log.error("action=fleet-notify result=failed error=%s", exc)
            if not self.d.loop.armed("fleet-sync") or self.d.loop.timers["fleet-sync"] > \
                    self.d.clock() + self.retry:
                self.d.loop.call_at("fleet-sync", self.d.clock() + self.retry)

    # -- what peers announce ----------------------------------------------------------

    def handle(self, payloads: Sequence[str]) -> None:
        banned: set[str] = set()
        lifted: set[str] = set()
        hits: list[Event] = []
        suspended: set[str] = set()
        unsuspended: set[str] = set()
        risk: list[Any] = []
        for raw in payloads:
            self.stats["notifications"] += 1
            try:
                msg = json.loads(raw)
                if not isinstance(msg, dict) or msg.get("n") == self.node:
                    continue
                if "i" in msg and self._repeated(str(msg.get("n")), str(msg["i"])):
                    self.stats["hits_repeated"] += 1
                    continue
                _last_wins(msg.get("b", ()), msg.get("u", ()), banned, lifted)
                hits += [e for e in map(_event, msg.get("h", ())) if e is not None]
                _last_wins(msg.get("s", ()), msg.get("r", ()), suspended, unsuspended)
                risk += list(msg.get("a", ()))
            except (ValueError, TypeError, AttributeError):
                self.stats["bad_payloads"] += 1
        if lifted:
            self.drop(lifted)
        if banned:
            self.adopt(self.d.store.load_bans(banned))
        if hits:
            self.stats["hits_received"] += len(hits)
            self.d.feed(hits)
        if unsuspended:
            self.risk.drop(unsuspended)
        if suspended:
            self.risk.adopt(suspended)
        if risk:
            self.risk.feed(risk)

    def adopt(self, rows: Sequence[Any]) -> None:
        new = self.d.engine.adopt_bans(rows)
        if new and self.d.firewall is not None:
            self.d.effects.guarded("firewall", lambda: self.d.firewall.ban(new))
        # The deciding node logged each ban; here one line per batch (a storm of 10,000
        # would otherwise cost the peers more in logging than in the kernel).
        if new:
            log.info("action=fleet-bans added=%d first=%s", len(new), new[0].net)
        self.stats["bans_adopted"] += len(new)
        if new:
            self.d.schedule_engine()

    def drop(self, nets: Any) -> None:
        gone = self.d.engine.drop_bans(nets)
        if gone and self.d.firewall is not None:
            self.d.effects.guarded("firewall", lambda: self.d.firewall.unban(gone))
        if gone:
            log.info("action=fleet-unbans lifted=%d first=%s", len(gone), gone[0])
        self.stats["bans_dropped"] += len(gone)

    def reconcile(self) -> None:
        """This node's bans := the table's (its own pending writes aside)."""
        if self.d.effects.store_dirty:
            return   # the table lacks our own decisions until the resync: compare after it
        try:
            rows = self.d.store.load_bans()
        except Exception as exc:
            log.error("action=fleet-reconcile result=failed error=%s", exc)
            return
        table = {b.net for b in rows}
        self.drop([net for net in list(self.d.engine.bans) if net not in table])
        self.adopt(rows)
        try:
            self.risk.reconcile()
        except Exception as exc:
            log.error("action=fleet-reconcile result=failed error=%s", exc)
        self.stats["reconciles"] += 1

    # -- what this node announces ----------------------------------------------------

    def publish_hits(self, events: Sequence[Event]) -> None:
        """This node's failure hits, for the peers' scores; queued while the store is away
        and sent, in order and once, when it is back (send_backlog)."""
        # A hit of an address this node has banned changes nothing: the ban reaches the
        # peers by itself (a ban storm then costs them one announcement, not two).
        covered = self.d.engine.covered_by_ban
        hits = [[ev.time.isoformat(), ev.kind, ev.ip, _cut(ev.user), _cut(ev.service)]
                for ev in events if ev.kind in FAILURE_KINDS and ev.ip and not covered(ev.ip)]
        self._queue(hits, "h")
        if self.risk.enabled():   # logins: the SASL IDs' client IPs and networks
            self._queue(risk_items(events=events), "a")
        self._send()

    def publish_risk(self, records: Sequence[Any]) -> None:
        """This node's message records and rejected attempts, for the peers' account
        scores (queued and sent like the hits)."""
        if self.risk.enabled():
            self._queue(risk_items(records=records), "a")
            self._send()

    def _queue(self, items: list[Any], key: str) -> None:
        if items:
            for payload, count in _chunks(self.node, items, self._next_id, key):
                self.backlog.append((payload, count))
            while len(self.backlog) > BACKLOG_MAX:
                self.stats["hits_dropped"] += self.backlog.popleft()[1]

    def _send(self) -> None:
        if not self.backlog:
            return
        if self.d.effects.store_dirty:
            self.stats["hits_queued"] = sum(c for _p, c in self.backlog)
        else:
            self.send_backlog()

    def _next_id(self) -> str:
        return f"{self._incarnation}:{next(self._ids)}"

    def send_backlog(self) -> bool:
        """Send the queued hit payloads, oldest first; stop at the first failure."""
        queued = len(self.backlog)
        try:
            while self.backlog:
                payload, count = self.backlog[0]
                self.d.store.db.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))
                self.backlog.popleft()
                self.stats["hits_sent"] += count
        except Exception as exc:
            self.stats["hits_queued"] = sum(c for _p, c in self.backlog)
            log.error("action=fleet-hits result=failed queued=%d error=%s",
                      self.stats["hits_queued"], exc)
            return False
        if self.stats["hits_queued"]:   # a replay after an outage
            log.info("action=fleet-hits result=replayed payloads=%d hits=%d", queued,
                     self.stats["hits_queued"])
        self.stats["hits_queued"] = 0
        return True

    def _repeated(self, node: str, ident: str) -> bool:
        """Has this peer's announcement been handled already? (Remembers it if not.)"""
        ids, order = self._seen.setdefault(node, (set(), deque()))
        if ident in ids:
            return True
        ids.add(ident)
        order.append(ident)
        if len(order) > SEEN_MAX:
            ids.discard(order.popleft())
        return False

    # -- timers ---------------------------------------------------------------------

    def schedule(self, now: float) -> None:
        # The first soon: a ban written between the start's load and LISTEN was not heard.
        self.d.loop.call_at("fleet-sync", now + min(START_SYNC, self.d.cfg.store.sync_interval))
        self.d.loop.call_at("fleet-beat", now)

    def _on_sync(self, now: float) -> None:
        if self.conn is not None:
            self.reconcile()
        self.d.loop.call_at("fleet-sync", now + self.d.cfg.store.sync_interval)

    def _on_beat(self, now: float) -> None:
        self.d.loop.call_at("fleet-beat", now + HEARTBEAT)
        if self.d.effects.store_dirty:
            return
        if self.backlog:      # the hits of an outage, even when no new hit comes
            self.send_backlog()
        try:
            with self.d.store.transaction():
                self.d.store.db.execute(
                    "INSERT INTO nodes (node, started_at, seen_at) VALUES (?, ?, ?) ON CONFLICT "
                    "(node) DO UPDATE SET seen_at = excluded.seen_at",
                    (self.node, self.d.counters.started, now))
        except Exception as exc:
            log.error("action=fleet-beat result=failed error=%s", exc)

    def status(self) -> dict[str, Any]:
        now = self.d.clock()
        try:
            rows = list(self.d.store.db.execute(
                "SELECT node, seen_at FROM nodes WHERE seen_at > ? ORDER BY node",
                (now - PEER_RECENT,)))
            peers: list[Any] = [{"node": n, "seen": round(now - s, 1)} for n, s in rows
                                if n != self.node]
        except Exception as exc:
            peers = [{"error": str(exc)}]
        return {"node": self.node, "listening": self.conn is not None, "peers": peers,
                **self.stats}

    def actions(self) -> dict[str, Any]:
        """What logwatchctl bans/grants read from the shared table (Actions fields)."""
        store = self.d.store

        def nodes(kind: str) -> dict[str, str]:
            try:
                return store.ban_nodes() if kind == "bans" else store.grant_nodes()
            except Exception:
                return {}

        def fleet_grants() -> list[Any]:
            try:
                return store.live_grants(self.d.clock())
            except Exception:
                return []

        return {"nodes": nodes, "fleet_grants": fleet_grants}

    def close(self) -> None:
        self._close()

def _last_wins(added: Any, removed: Any, on: set[str], off: set[str]) -> None:
    """Fold one announcement's added and removed names into the batch's on/off sets (a later
    announcement overrides an earlier one; within one, the removal)."""
    for name in added:
        on.add(str(name))
        off.discard(str(name))
    for name in removed:
        off.add(str(name))
        on.discard(str(name))


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_FIELD]

def _chunks(node: str, hits: list[list[Any]],
            new_id: Any, key: str = "h") -> list[tuple[str, int]]:
    """Payloads {"n": node, "i": id, key: [items]} under PAYLOAD_MAX (key "h": failure hits,
    "a": risk inputs), with their item counts."""
    out: list[tuple[str, int]] = []
    chunk: list[list[Any]] = []
    size = 0

    def close() -> None:
        msg: dict[str, Any] = {"n": node, key: chunk, "i": new_id()}
        out.append((json.dumps(msg, separators=(",", ":")), len(chunk)))

    for hit in hits:
        item = json.dumps(hit, separators=(",", ":"))
        if len(item) > PAYLOAD_MAX - 256:
            # Too big for any payload: it would block the queue for ever (the fields are
            # capped, so this cannot happen; checked all the same).
            continue
        if chunk and size + len(item) > PAYLOAD_MAX - 128:
            close()
            chunk, size = [], 0
        chunk.append(hit)
        size += len(item) + 1
    if chunk:
        close()
    return out

def _event(hit: Any) -> Event | None:
    """A peer's hit as an event of this node, or None when malformed (never trusted)."""
    if not isinstance(hit, list) or len(hit) != 5:
        return None
    stamp, kind, ip, user, service = hit
    ip = normalize_ip(ip) if isinstance(ip, str) else None
    if kind not in FAILURE_KINDS or ip is None or not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return Event(time=when, kind=kind, ip=ip, user=_cut(user) if isinstance(user, str) else None,
                 service=_cut(service) if isinstance(service, str) else None,
                 program="fleet", rule="fleet", host=None)

def make_fleet(daemon: Any) -> FleetSync | None:
    """A FleetSync when the store is shared, else None."""
    return FleetSync(daemon) if getattr(daemon.store, "shared", False) else None
