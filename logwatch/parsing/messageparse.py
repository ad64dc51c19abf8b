"""The message parser: chunks of whole log lines in, message lines out, for the accounting.

It runs the message rules (rules/postfix-messages.yaml: kinds in events.MESSAGE_KINDS) the way
the event parser runs its own: a literal matcher finds the lines holding a rule's prefilter,
only those are framed and tried. It has its own matcher, so the event parser's rules, literals
and speed are exactly what they were; with accounting off it does not exist at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import NamedTuple

from logwatch.clock import Clock, wall
from logwatch.parsing.events import normalize_ip
from logwatch.parsing.framing import Framer
from logwatch.parsing.literalscan import make_matcher
from logwatch.parsing.parser import MAX_MESSAGE
from logwatch.parsing.rules import Rule, Ruleset


class MessageLine(NamedTuple):
    """One message line: its kind, log time (epoch), host ("" when the framing has none),
    program, the rule's named groups (None: not in this line) and the rule's id."""

    kind: str
    time: float
    host: str
    program: str
    fields: dict[str, str | None]
    rule: str


_new_line = tuple.__new__
# (bound regex search, rule id, kind, whether the rule has an ip group)
_Plan = tuple[Callable[[str], object], str, str, bool]


@dataclass
class MessageParserStats:
    lines: int = 0
    candidates: int = 0         # lines holding a literal of their program's message rules
    matched: int = 0
    unmatched: int = 0          # candidates no rule matched (a format we do not know, or hostile)
    invalid_ip: int = 0
    unknown_framing: int = 0
    too_long: int = 0


class MessageParser:
    """Message lines of chunks, with the message rules of a Ruleset."""

    def __init__(self, ruleset: Ruleset, clock: Clock = wall, matcher: str = "auto",
                 max_message: int = MAX_MESSAGE) -> None:
        self.rules = ruleset.message_rules
        self.literals = tuple(sorted({lit for rule in self.rules for lit in rule.prefilters}))
        self.matcher = make_matcher(self.literals, matcher)
        self.max_message = max_message
        self.framer = Framer(clock)
        self.stats = MessageParserStats()
        self._bit = {lit: 1 << i for i, lit in enumerate(self.literals)}
        self._plans: dict[tuple[str, int], tuple[_Plan, ...]] = {}
        self._epoch: dict[datetime, float] = {}

    def parse(self, chunk: bytes) -> list[MessageLine]:
        """The message lines of a chunk of whole lines, in order."""
        if not chunk or not self.literals:
            return []
        self.stats.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        starts, masks = self.matcher.candidates(chunk)
        find = chunk.find
        ends = list(map(find, repeat(b"\n"), starts))
        if ends and ends[-1] < 0:
            ends[-1] = len(chunk)
        raws = list(map(chunk.__getitem__, map(slice, starts, ends)))
        return self._lines(raws, masks, not self.matcher.exact)

    def parse_line(self, line: bytes) -> MessageLine | None:
        """One line through every message rule of its program (the reference path)."""
        found = self._lines([line.rstrip(b"\n")], [(1 << len(self.literals)) - 1], False)
        return found[0] if found else None

    def _lines(self, raws: list[bytes], masks: list[int], check: bool) -> list[MessageLine]:
        out: list[MessageLine] = []
        append = out.append
        stats, max_message = self.stats, self.max_message
        plans_get, epoch_get = self._plans.get, self._epoch.get
        texts = list(map(bytes.decode, raws, repeat("utf-8"), repeat("replace")))
        for raw, frame, mask in zip(raws, self.framer.frame_lines(texts), masks, strict=True):
            if frame is None:
                stats.unknown_framing += 1
                continue
            when, host, program, message = frame
            if len(message) > max_message:
                stats.too_long += 1
                continue
            if check:
                mask = self._present(raw, mask)
            plans = plans_get((program, mask))
            if plans is None:
                plans = self._plans_for(program, mask)
            if not plans:
                continue
            stats.candidates += 1
            for match, rule_id, kind, has_ip in plans:
                rm = match(message)
                if rm is None:
                    continue
                fields = rm.groupdict()      # type: ignore[attr-defined]
                if has_ip and fields["ip"] is not None:
                    ip = normalize_ip(fields["ip"])
                    if ip is None:
                        stats.invalid_ip += 1
                        break
                    fields["ip"] = ip
                ts = epoch_get(when)
                if ts is None:
                    ts = self._timestamp(when)
                append(_new_line(MessageLine, (kind, ts, host or "", program, fields, rule_id)))
                break
            else:
                stats.unmatched += 1
        stats.matched += len(out)
        return out

    def _timestamp(self, when: datetime) -> float:
        if len(self._epoch) > 4096:
            self._epoch.clear()
        ts = self._epoch[when] = when.timestamp()
        return ts

    def _present(self, raw: bytes, mask: int) -> int:
        """The literals of `mask` (a matcher's over-report) really in the line."""
        return sum(bit for lit, bit in self._bit.items() if mask & bit and lit in raw)

    def _plans_for(self, program: str, mask: int) -> tuple[_Plan, ...]:
        """The rules of `program` with a literal in `mask`, in file order (memoised)."""
        plans = tuple(_plan(rule) for rule in self.rules if rule.applies_to(program)
                      and any(self._bit[lit] & mask for lit in rule.prefilters))
        if len(self._plans) > 65536:
            self._plans.clear()
        self._plans[(program, mask)] = plans
        return plans

    def counters(self) -> dict[str, int]:
        """The statistics for `logwatchctl status`."""
        s = self.stats
        return {"lines": s.lines, "candidates": s.candidates, "matched": s.matched,
                "unmatched": s.unmatched, "invalid_ip": s.invalid_ip,
                "unknown_framing": s.unknown_framing, "too_long": s.too_long}


def _plan(rule: Rule) -> _Plan:
    return (rule.regex.search, rule.id, rule.kind, "ip" in rule.regex.groupindex)
