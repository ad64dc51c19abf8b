"""Quotas (ClueGetter): sliding-window counts per (quota, key value), profiles, refunds.

Each quota's window is SLICES per-period-slice counters per key value (an array of unsigned
ints: the newest slice number, then the ring), so 100,000 keys cost a few MB, not a list of
timestamps. The count of a key is the sum of the slices of the last `period` (the current
slice included: the window slides by period/SLICES). Counting is idempotent per Postfix
`instance` (one SMTP transaction): a recipient, a message and its bytes are counted once
however often Postfix asks. A request over a limit is answered the quota's action and counts
nothing. Refunds take back what a request counted when the log shows Postfix rejected it later.
"""

from __future__ import annotations

import ipaddress
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from logwatch.engine.policy.request import PolicyRequest

SLICES = 12
MAX_KEYS = 1_000_000          # per quota: beyond this the oldest keys are dropped
MAX_INSTANCES = 200_000       # transactions remembered for idempotency and refunds
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
    """Sliding-window counters of one quota, one compact array per key value."""

    def __init__(self, period: float) -> None:
        self.slice_len = period / SLICES
        self.keys: dict[str, array] = {}

    def _slice(self, now: float) -> int:
        return int(now / self.slice_len)

    def total(self, key: str, now: float) -> int:
        arr = self.keys.get(key)
        if arr is None:
            return 0
        cur, newest = self._slice(now), arr[0]
        lo = max(cur, newest) - SLICES + 1
        return sum(arr[1 + s % SLICES] for s in range(lo, min(cur, newest) + 1))

    def add(self, key: str, now: float, amount: int) -> int:
        """Count amount now; the slice it went to (for a refund)."""
        cur = self._slice(now)
        arr = self.keys.get(key)
        if arr is None:
            if len(self.keys) >= MAX_KEYS:
                del self.keys[next(iter(self.keys))]
            arr = self.keys[key] = array("I", [0] * (SLICES + 1))
            arr[0] = cur
        if cur > arr[0]:
            for s in range(max(arr[0] + 1, cur - SLICES + 1), cur + 1):
                arr[1 + s % SLICES] = 0
            arr[0] = cur
        slot = 1 + cur % SLICES if cur > arr[0] - SLICES else None
        if slot is not None:
            arr[slot] = min(arr[slot] + amount, _CAP)
        return cur

    def refund(self, key: str, slice_no: int, amount: int) -> bool:
        arr = self.keys.get(key)
        if arr is None or not arr[0] - SLICES < slice_no <= arr[0]:
            return False
        slot = 1 + slice_no % SLICES
        arr[slot] -= min(amount, arr[slot])
        return True

    def expire(self, now: float) -> int:
        """Drop the keys whose whole window has passed; how many."""
        cut = self._slice(now) - SLICES
        old = [k for k, arr in self.keys.items() if arr[0] <= cut]
        for k in old:
            del self.keys[k]
        return len(old)


@dataclass
class _Instance:
    """What one SMTP transaction (Postfix `instance`) was charged, for idempotency/refunds."""

    ip: str | None
    time: float
    rcpts: set[str] = field(default_factory=set)
    states: set[str] = field(default_factory=set)       # DATA / END-OF-MESSAGE counted
    last: str = ""                                      # the newest request's recipient
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
        self.dirty: set[tuple[int, str]] = set()
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
            if self.windows[i].total(key, now) + amount > limit:
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
                inst.rcpts.add(rcpt)
            else:
                inst.states.add(state)
            inst.last = rcpt if state == "RCPT" else ""
            if inst.ip is not None:
                self.last_by_ip.pop(inst.ip, None)
                if len(self.last_by_ip) >= MAX_INSTANCES:
                    del self.last_by_ip[next(iter(self.last_by_ip))]
                self.last_by_ip[inst.ip] = req.instance
        for i, key, amount in plan:
            slice_no = self.windows[i].add(key, now, amount)
            self.dirty.add((i, key))
            if inst is not None:
                tag = rcpt if state == "RCPT" and self.specs[i].count == "recipients" else ""
                inst.charges.append((i, key, slice_no, amount, tag))

    # -- refunds -----------------------------------------------------------------------

    def refund(self, ip: str, recipient: str | None, now: float) -> int:
        """The log says Postfix rejected the client's newest request (recipient given: that
        recipient of its newest transaction): take back what it counted; how many charges."""
        instance = self.last_by_ip.get(ip)
        inst = self.instances.get(instance) if instance else None
        if inst is None or now - inst.time > REFUND_WINDOW or not inst.charges:
            return 0
        if recipient is not None:
            which = {recipient.lower()[:MAX_KEY_TEXT]} & inst.rcpts
            if not which:
                return 0
        else:
            which = {inst.last} if inst.last else set(inst.rcpts)
        inst.rcpts -= which
        if inst.rcpts:
            back = [c for c in inst.charges if c[4] in which]
        else:
            back = inst.charges          # no recipient left: the message counts nothing
        inst.charges = [c for c in inst.charges if c not in back]
        for i, key, slice_no, amount, _ in back:
            if self.windows[i].refund(key, slice_no, amount):
                self.dirty.add((i, key))
        return len(back)

    # -- upkeep and persistence --------------------------------------------------------

    def expire(self, now: float) -> int:
        horizon = max((q.period for q in self.specs), default=0.0) + REFUND_WINDOW
        for ident in [k for k, v in self.instances.items() if now - v.time > horizon]:
            inst = self.instances.pop(ident)
            if inst.ip is not None and self.last_by_ip.get(inst.ip) == ident:
                del self.last_by_ip[inst.ip]
        return sum(w.expire(now) for w in self.windows)

    def take_dirty(self) -> list[tuple[str, str, float, str]]:
        """Rows (quota, key, slice length, counters text) changed since the last call."""
        rows = []
        for i, key in self.dirty:
            arr = self.windows[i].keys.get(key)
            data = "" if arr is None else ",".join(map(str, arr))
            rows.append((self.specs[i].name, key, self.windows[i].slice_len, data))
        self.dirty.clear()
        return rows

    def load(self, rows: Iterable[tuple[str, str, float, str]], now: float) -> int:
        """Counters from the store (a quota whose period changed starts afresh); how many."""
        index = {q.name: i for i, q in enumerate(self.specs)}
        loaded = 0
        for name, key, slice_len, data in rows:
            i = index.get(name)
            if i is None or abs(self.windows[i].slice_len - slice_len) > 1e-9 or not data:
                continue
            try:
                values = [int(v) for v in data.split(",")]
                arr = array("I", values)
            except (ValueError, OverflowError):
                continue
            if len(arr) == SLICES + 1:
                self.windows[i].keys[key] = arr
                loaded += 1
        for w in self.windows:
            w.expire(now)
        return loaded

    def keys(self) -> Iterator[tuple[str, str]]:
        for q, w in zip(self.specs, self.windows, strict=True):
            for key in w.keys:
                yield q.name, key


def build(policy: Any, quotas: Any, context: Any) -> QuotaCheck | None:
    if not quotas:
        return None
    specs = [QuotaSpec(q.name, q.key, q.count, q.limit, q.period, q.action, q.profiles)
             for q in quotas]
    return QuotaCheck(specs, context.read_text)
