"""Quotas (ClueGetter): sliding-window counts per (quota, key value), profiles, refunds.

Each quota's window is SLICES per-period-slice counters per key value (an array of unsigned
ints: the newest slice number, then the ring), so 100,000 keys cost a few MB, not a list of
timestamps. The count of a key is the sum of the slices of the last `period` (the current
slice included: the window slides by period/SLICES). Counting is idempotent per Postfix
`instance` (one SMTP transaction): a recipient, a message and its bytes are counted once
however often Postfix asks. A request over a limit is answered the quota's action and counts
nothing. Refunds take back what a recipient or a message counted when the log shows Postfix rejected
it later (a reject naming that recipient, or a milter-reject naming the message's queue id).
"""

from __future__ import annotations

import ipaddress
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from logwatch.engine.policy.request import PolicyRequest

SLICES = 12
MAX_KEYS = 1_000_000          # per quota: beyond this the oldest keys are dropped
# Transactions remembered for idempotency and refunds (the newest; about 400 bytes each).
MAX_INSTANCES = 20_000
MAX_KEY_TEXT = 512
REFUND_WINDOW = 900.0         # a rejection logged later than this refunds nothing
_CAP = 0xFFFFFFFF

KEYS = ("sasl_username", "client_address", "client_network", "sender", "sender_domain",
        "recipient")
COUNTS = ("messages", "recipients", "bytes")
ACTIONS = {
    "defer": "DEFER_IF_PERMIT 4.7.1 Quota {name} exceeded, try again later",
    "reject": "REJECT 5.7.1 Quota {name} exceeded",
    "hold": "HOLD Quota {name} exceeded",
}


@dataclass(frozen=True)
class QuotaSpec:
    """One configured quota (quotas[] in the config)."""

    name: str
    key: str
    count: str
    limit: int
    period: float
    action: str = "defer"
    profiles: str | None = None

    @property
    def action_text(self) -> str:
        return ACTIONS[self.action].format(name=self.name)


def key_value(key: str, req: PolicyRequest) -> str | None:
    """The value a request has for a quota key (lower-cased), or None: not counted."""
    if key == "client_address":
        return req.client_address
    if key == "client_network":
        ip = req.client_address
        if ip is None:
            return None
        prefix = 64 if ":" in ip else 24
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    if key == "sender_domain":
        sender = req.sender
        value = sender.rpartition("@")[2] if "@" in sender else ""
    else:
        value = req.get(key)
    value = value.lower()
    return value if value and len(value) <= MAX_KEY_TEXT else None


def parse_profiles(text: str) -> tuple[dict[str, int | None], list[str]]:
    """(key -> limit, None meaning unlimited; warnings) of a profile file: `KEY LIMIT` lines
    (LIMIT a whole number or `unlimited`), `#` comments."""
    out: dict[str, int | None] = {}
    warnings = []
    for number, raw in enumerate(text.splitlines(), 1):
        parts = raw.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) != 2 or not (parts[1].isdigit() or parts[1] == "unlimited"):
            warnings.append(f"line {number}: expected KEY LIMIT (a number or unlimited)")
            continue
        out[parts[0].lower()] = None if parts[1] == "unlimited" else int(parts[1])
    return out, warnings


class Window:
    """Sliding-window counters of one quota: per key value a row of SLICES + 1 unsigned ints
    (the newest slice number, then the ring) in one array shared by all keys."""

    ROW = SLICES + 1

    def __init__(self, period: float) -> None:
        self.slice_len = period / SLICES
        self.keys: dict[str, int] = {}          # key value -> its row's offset in data
        self.data = array("I")
        self.free: list[int] = []               # offsets of rows of expired keys

    def _slice(self, now: float) -> int:
        return int(now / self.slice_len)

    def copy(self, key: str) -> array[int] | None:
        """The key's row as a new array (a snapshot another thread may read), or None."""
        at = self.keys.get(key)
        return None if at is None else self.data[at:at + self.ROW]

    def row(self, key: str) -> list[int] | None:
        """The key's row (newest slice, ring), or None."""
        at = self.keys.get(key)
        return None if at is None else list(self.data[at:at + self.ROW])

    def total(self, key: str, now: float) -> int:
        at = self.keys.get(key)
        if at is None:
            return 0
        data = self.data
        cur, newest = self._slice(now), data[at]
        lo = max(cur, newest) - SLICES + 1
        return sum(data[at + 1 + s % SLICES] for s in range(lo, min(cur, newest) + 1))

    def _new_row(self, key: str, cur: int) -> int:
        if len(self.keys) >= MAX_KEYS:
            self._drop(next(iter(self.keys)))
        if self.free:
            at = self.free.pop()
            self.data[at:at + self.ROW] = array("I", [0] * self.ROW)
        else:
            at = len(self.data)
            self.data.extend([0] * self.ROW)
        self.data[at] = cur
        self.keys[key] = at
        return at

    def _drop(self, key: str) -> None:
        self.free.append(self.keys.pop(key))

    def add(self, key: str, now: float, amount: int) -> int:
        """Count amount now; the slice it went to (for a refund)."""
        cur = self._slice(now)
        at = self.keys.get(key)
        if at is None:
            at = self._new_row(key, cur)
        data = self.data
        if cur > data[at]:
            for s in range(max(data[at] + 1, cur - SLICES + 1), cur + 1):
                data[at + 1 + s % SLICES] = 0
            data[at] = cur
        if cur > data[at] - SLICES:
            slot = at + 1 + cur % SLICES
            data[slot] = min(data[slot] + amount, _CAP)
        return cur

    def refund(self, key: str, slice_no: int, amount: int) -> bool:
        at = self.keys.get(key)
        if at is None or not self.data[at] - SLICES < slice_no <= self.data[at]:
            return False
        slot = at + 1 + slice_no % SLICES
        self.data[slot] -= min(amount, self.data[slot])
        return True

    def expire(self, now: float) -> int:
        """Drop the keys whose whole window has passed; how many."""
        cut = self._slice(now) - SLICES
        data = self.data
        old = [k for k, at in self.keys.items() if data[at] <= cut]
        for k in old:
            self._drop(k)
        return len(old)

    def put(self, key: str, values: list[int]) -> None:
        """A row read from the store."""
        at = self.keys.get(key)
        if at is None:
            at = self._new_row(key, values[0])
        self.data[at:at + self.ROW] = array("I", values)


@dataclass(slots=True)
class _Instance:
    """What one SMTP transaction (Postfix `instance`) was charged, for idempotency/refunds."""

    ip: str | None
    time: float
    rcpts: list[str] = field(default_factory=list)      # recipients counted (a few)
    states: list[str] = field(default_factory=list)     # DATA / END-OF-MESSAGE counted
    last: str = ""                                      # the newest request's recipient
    queue_id: str = ""
    charges: list[tuple[int, str, int, int, str]] = field(default_factory=list)
    # (quota index, key value, slice, amount, recipient or "" for the whole message)


class QuotaCheck:
    """All configured quotas, checked in order; the first over its limit answers."""

    def __init__(self, specs: list[QuotaSpec], read_text: Callable[[str], str] | None = None
                 ) -> None:
        self.specs = specs
        self.windows = [Window(q.period) for q in specs]
        self.profiles: list[dict[str, int | None]] = [{} for _ in specs]
        self.instances: dict[str, _Instance] = {}
        self.last_by_ip: dict[str, str] = {}        # ip -> its newest charged instance
        self.by_queue_id: dict[str, str] = {}       # Postfix queue id -> instance
        self.dirty: list[set[str]] = [set() for _ in specs]
        # A shared store: each peer node's counts per quota (a copy of its stored rows,
        # replaced as they change: put_peer_rows); a key's total is its own plus these.
        self.peers: list[dict[str, Window]] = [{} for _ in specs]
        self.warnings: list[str] = []
        if read_text is not None:
            self.reload_profiles(read_text)

    # -- profiles ----------------------------------------------------------------------

    def profile_paths(self) -> list[str]:
        return sorted({q.profiles for q in self.specs if q.profiles})

    def reload_profiles(self, read_text: Callable[[str], str]) -> list[str]:
        """Re-read every quota's profile file; warnings (a file that cannot be read keeps
        the profile it had)."""
        warnings = []
        for i, q in enumerate(self.specs):
            if not q.profiles:
                continue
            try:
                table, bad = parse_profiles(read_text(q.profiles))
            except (OSError, UnicodeDecodeError) as exc:
                warnings.append(f"{q.profiles}: {exc}")
                continue
            warnings += [f"{q.profiles}: {w}" for w in bad]
            self.profiles[i] = table
        self.warnings = warnings
        return warnings

    def limit(self, index: int, key: str) -> int | None:
        table = self.profiles[index]
        return table[key] if key in table else self.specs[index].limit

    # -- decisions ---------------------------------------------------------------------

    def _amount(self, q: QuotaSpec, state: str, req: PolicyRequest, inst: _Instance | None,
                index: int) -> int:
        charged = inst is not None and any(c[0] == index for c in inst.charges)
        if q.count == "bytes":
            return req.size if state == "END-OF-MESSAGE" else 0
        if q.count == "messages":
            return 1 if state in ("RCPT", "DATA", "END-OF-MESSAGE") and not charged else 0
        if state == "RCPT":
            return 1
        if state in ("DATA", "END-OF-MESSAGE") and not charged:
            return req.recipient_count
        return 0

    def decide(self, req: PolicyRequest, now: float, commit: bool) -> Any:
        from logwatch.engine.policy import Verdict

        state = req.protocol_state
        if state not in ("RCPT", "DATA", "END-OF-MESSAGE"):
            return None
        inst = self.instances.get(req.instance) if req.instance else None
        rcpt = req.recipient.lower()[:MAX_KEY_TEXT]
        if inst is not None and (rcpt in inst.rcpts if state == "RCPT" else state in inst.states):
            return None                  # Postfix asked again: counted already
        plan = []
        for i, q in enumerate(self.specs):
            key = key_value(q.key, req)
            if key is None:
                continue
            amount = self._amount(q, state, req, inst, i)
            limit = self.limit(i, key)
            if amount <= 0 or limit is None:
                continue
            total = self.windows[i].total(key, now)
            if self.peers[i]:
                total += sum(w.total(key, now) for w in self.peers[i].values())
            if total + amount > limit:
                return Verdict(f"quota:{q.name}", q.action_text)
            plan.append((i, key, amount))
        if commit:
            self._charge(req, state, rcpt, plan, now)
        return None

    def _charge(self, req: PolicyRequest, state: str, rcpt: str,
                plan: list[tuple[int, str, int]], now: float) -> None:
        inst = None
        if req.instance:
            inst = self.instances.pop(req.instance, None) or _Instance(req.client_address, now)
            inst.time = now
            if len(self.instances) >= MAX_INSTANCES:
                del self.instances[next(iter(self.instances))]
            self.instances[req.instance] = inst          # newest last
            if state == "RCPT":
                inst.rcpts.append(rcpt)
            else:
                inst.states.append(state)
            inst.last = rcpt if state == "RCPT" else ""
            qid = req.queue_id[:MAX_KEY_TEXT]
            if qid and not inst.queue_id:
                inst.queue_id = qid
                if len(self.by_queue_id) >= MAX_INSTANCES:
                    del self.by_queue_id[next(iter(self.by_queue_id))]
                self.by_queue_id[qid] = req.instance
            if inst.ip is not None:
                self.last_by_ip.pop(inst.ip, None)
                if len(self.last_by_ip) >= MAX_INSTANCES:
                    del self.last_by_ip[next(iter(self.last_by_ip))]
                self.last_by_ip[inst.ip] = req.instance
        for i, key, amount in plan:
            slice_no = self.windows[i].add(key, now, amount)
            self.dirty[i].add(key)
            if inst is not None:
                tag = rcpt if state == "RCPT" and self.specs[i].count == "recipients" else ""
                inst.charges.append((i, key, slice_no, amount, tag))

    # -- refunds -----------------------------------------------------------------------

    def refund(self, ip: str, recipient: str, now: float) -> int:
        """The log says Postfix rejected this recipient of the client (after we counted it):
        take back what it counted in the client's newest transaction; how many charges. A
        transaction left without recipients takes back its message and bytes too.

        Only a rejection naming the recipient refunds: a reject line without one (an RBL,
        a syntax error) may be about a request we never saw, and refunding the client's
        previous request would let it send without limit."""
        instance = self.last_by_ip.get(ip)
        inst = self.instances.get(instance) if instance else None
        which = {recipient.lower()[:MAX_KEY_TEXT]}
        if inst is None or now - inst.time > REFUND_WINDOW or not which & set(inst.rcpts):
            return 0
        return self._take_back(inst, which)

    def refund_message(self, queue_id: str, now: float) -> int:
        """A milter rejected the whole message with this (Postfix-assigned) queue id."""
        instance = self.by_queue_id.pop(queue_id, None)
        inst = self.instances.get(instance) if instance else None
        if inst is None or now - inst.time > REFUND_WINDOW:
            return 0
        return self._take_back(inst, set(inst.rcpts))

    def _take_back(self, inst: _Instance, which: set[str]) -> int:
        inst.rcpts = [r for r in inst.rcpts if r not in which]
        if inst.rcpts:
            back = [c for c in inst.charges if c[4] in which]
        else:
            back = inst.charges          # no recipient left: the message counts nothing
        inst.charges = [c for c in inst.charges if c not in back]
        for i, key, slice_no, amount, _ in back:
            if self.windows[i].refund(key, slice_no, amount):
                self.dirty[i].add(key)
        return len(back)

    # -- upkeep and persistence --------------------------------------------------------

    def expire(self, now: float) -> int:
        horizon = max((q.period for q in self.specs), default=0.0) + REFUND_WINDOW
        for ident in [k for k, v in self.instances.items() if now - v.time > horizon]:
            inst = self.instances.pop(ident)
            if inst.ip is not None and self.last_by_ip.get(inst.ip) == ident:
                del self.last_by_ip[inst.ip]
            if inst.queue_id and self.by_queue_id.get(inst.queue_id) == ident:
                del self.by_queue_id[inst.queue_id]
        for peers in self.peers:
            for w in peers.values():
                w.expire(now)
        return sum(w.expire(now) for w in self.windows)

    def take_dirty(self, limit: int | None = None) -> list[tuple[str, str, float, str]]:
        """take_dirty_copies with the counters as the store's text (for tests and tools)."""
        return [(name, key, sl, "" if v is None else ",".join(map(str, v)))
                for name, key, sl, v in self.take_dirty_copies(1 << 62 if limit is None
                                                               else limit)]

    def take_dirty_copies(self, limit: int) -> list[tuple[str, str, float, array[int] | None]]:
        """Rows (quota, key, slice length, a copy of its counters or None: gone) changed since
        they were last taken, at most limit; cheap on the loop: the writer formats them."""
        rows: list[tuple[str, str, float, array[int] | None]] = []
        for i, keys in enumerate(self.dirty):
            window, name = self.windows[i], self.specs[i].name
            while keys and len(rows) < limit:
                key = keys.pop()
                rows.append((name, key, window.slice_len, window.copy(key)))
            if not keys:
                self.dirty[i] = set()   # a set never shrinks: a flood's table (4 MB) goes
        return rows

    def dirty_count(self) -> int:
        return sum(len(keys) for keys in self.dirty)

    def load(self, rows: Iterable[tuple[str, str, float, str]], now: float) -> int:
        """Counters from the store (a quota whose period changed starts afresh); how many."""
        index = {q.name: i for i, q in enumerate(self.specs)}
        loaded = 0
        for name, key, slice_len, data in rows:
            i = index.get(name)
            if i is None or abs(self.windows[i].slice_len - slice_len) > 1e-9 or not data:
                continue
            values = _counters(data)
            if values is not None and len(values) == SLICES + 1:
                self.windows[i].put(key, values)
                loaded += 1
        for w in self.windows:
            w.expire(now)
        return loaded

    def put_peer_rows(self, rows: Iterable[tuple[str, str, str, float, str, Any]]) -> int:
        """Other nodes' stored rows (node, quota, key, slice length, counters, ...): each
        replaces that node's row of the key (idempotent: a row read twice counts once);
        how many were taken. Rows of another period or malformed are skipped."""
        index = {q.name: i for i, q in enumerate(self.specs)}
        taken = 0
        for node, name, key, slice_len, data, *_ in rows:
            i = index.get(name)
            if i is None or abs(self.windows[i].slice_len - slice_len) > 1e-9:
                continue
            values = _counters(data) if data else []
            if values is None:
                continue
            window = self.peers[i].get(node)
            if window is None:
                window = self.peers[i][node] = Window(self.specs[i].period)
            if not any(values[1:]):
                if key in window.keys:
                    window._drop(key)
                taken += 1
            elif len(values) == SLICES + 1 and len(key) <= MAX_KEY_TEXT:
                window.put(key, values)
                taken += 1
        return taken


def _counters(text: str) -> list[int] | None:
    """A stored counter row ("newest,c0,c1,...") as unsigned ints; None when malformed."""
    try:
        values = [int(v) for v in text.split(",")]
        array("I", values)
    except (ValueError, OverflowError):
        return None
    return values


def build(policy: Any, quotas: Any, context: Any) -> QuotaCheck | None:
    if not quotas:
        return None
    return QuotaCheck(list(quotas), context.read_text)
