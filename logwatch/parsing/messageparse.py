"""The message parser: chunks of whole log lines in, message lines out, for the accounting.

It runs the message rules (rules/postfix-messages.yaml: kinds in events.MESSAGE_KINDS) the way
the event parser runs its own: a literal matcher finds the lines holding a rule's prefilter,
only those are framed and tried. It has its own matcher, so the event parser's rules, literals
and speed are exactly what they were; with accounting off it does not exist at all.
parse_rows() is the accounting's hot path: the same lines as rows (fields positional, for
Correlator.feed_rows), each line of the common framing matched by its program's rules at once
(parsing/messagefast.py); parse() stays the reference for every other line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import groupby, repeat
from typing import Any, NamedTuple

from logwatch.clock import Clock, wall
from logwatch.engine.messages import IP, Row, as_row
from logwatch.parsing.events import IP_CACHE, normalize_ip
from logwatch.parsing.framing import FAST_FRAME, Framer
from logwatch.parsing.literalscan import make_matcher
from logwatch.parsing.messagefast import Plan, build_plan, text_literals
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


# (bound regex search, rule id, kind, whether the rule has an ip group)
_Plan = tuple[Callable[[str], object], str, str, bool]
_UNSEEN = object()
# An IPv4 address already in its canonical text (octets 0-255, no leading zero): what
# normalize_ip() gives back unchanged, without ipaddress (3 us) when its cache misses.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# The fast path: the common syslog framing (framing.FAST_FRAME's, groups 1-8 so that
# Framer.stamp_time() reads its stamp) of the text before a line's first ": " without the
# pid, memoised per such head; then a rule's pattern from after that ": " (the program
# checked against the rule's globs first).
_HEAD = re.compile(FAST_FRAME.pattern.removesuffix(r"(?:\[(\d+)\])?: ?(.*)"), FAST_FRAME.flags)
# (bound match of the rule's pattern, rule id, kind, has an ip group, the rule, and its
# memo program -> whether the rule applies to it)
_Framed = tuple[Callable[[str], Any], str, str, bool, Rule, dict[str, bool]]


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
        self._framed_plans: dict[int, tuple[_Framed, ...]] = {}
        self._framed = {rule.id: _framed(rule) for rule in self.rules}
        self._epoch: dict[datetime, float] = {}
        self._hosts: dict[str, str] = {}
        self._heads: dict[str, tuple[str, ...]] = {}
        self._row_heads: dict[str, tuple[Any, ...]] = {}
        self._row_plans: dict[str, Plan | None] = {}
        self._row_until = 0.0
        self._text_literals = text_literals(self.rules)

    def parse(self, chunk: bytes) -> list[MessageLine]:
        """The message lines of a chunk of whole lines, in order (plain tuples in
        MessageLine's field order: the hot path does not build named ones)."""
        if not chunk or not self.literals:
            return []
        self.stats.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        starts, masks = self.matcher.candidates(chunk)
        find = chunk.find
        ends = list(map(find, repeat(b"\n"), starts))
        if ends and ends[-1] < 0:
            ends[-1] = len(chunk)
        raws = list(map(chunk.__getitem__, map(slice, starts, ends)))
        if not self.matcher.exact:
            return self._lines(raws, masks, True)
        return self._fast_lines(raws, masks)

    def parse_rows(self, chunk: bytes) -> list[Row]:
        """parse() of a chunk as rows (engine.messages.as_row(); Correlator.feed_rows()):
        the same lines, counters and order. A line in the common syslog framing is matched
        by its program's Plan, all rules at once; any other goes through parse()'s path."""
        if not chunk or not self.literals:
            return []
        self.stats.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        self.framer.frame_lines([])     # the year caches' daily expiry, and so the heads'
        if self._row_until != self.framer._caches_until or len(self._row_heads) > 4096:
            self._row_heads.clear()
            self._row_until = self.framer._caches_until
        if chunk.isascii():
            return self._rows(chunk.decode("ascii").split("\n"))
        # A line's length and offsets in text are those in bytes only when it is ASCII: the
        # others go through the reference path, the runs of ASCII lines between through ours.
        out: list[Row] = []
        for ascii_run, raws in groupby(chunk.split(b"\n"), bytes.isascii):
            if ascii_run:
                out += self._rows([raw.decode("ascii") for raw in raws])
            else:
                for raw in raws:
                    out += map(as_row, self._reference(raw))
        return out

    def _rows(self, lines: list[str]) -> list[Row]:
        out: list[Row] = []
        append, stats, limit = out.append, self.stats, self.max_message
        heads_get = self._row_heads.get
        any_literal, fast = self._any_literal, 0
        for line in lines:
            colon = line.find(": ")
            head = None
            if colon > 0 and len(line) <= limit:
                cut = colon
                if line[colon - 1] == "]":
                    cut = line.rfind("[", 0, colon)
                    if cut < 0 or not line[cut + 1:colon - 1].isdecimal():     # \d+
                        cut = 0
                head = heads_get(line[:cut]) or self._row_head(line[:cut])
            if not head:                     # another framing, too long, or an odd stamp
                if line and any_literal(line):
                    out.extend(map(as_row, self._reference(line)))
                continue
            ts, host, program, match, plain, alts, literals = head
            if match is None:                # no rule of its program: never a line
                continue
            m = (match if '"' in line else plain)(line, colon + 2)
            if m is not None:
                kind, indexes, has_ip, alt_literals, rule_id = alts[m.lastindex]
                if alt_literals is not None and not any(lit in line for lit in alt_literals):
                    m = None                 # a rule the reference path does not try
            if m is None:
                for literal in literals:
                    if literal in line:      # a candidate no rule matched (counted there)
                        out.extend(map(as_row, self._reference(line)))
                        break
                continue
            v = m.group(*indexes)
            if has_ip and v[IP] is not None:
                text_ip = v[IP]
                ip = canonical_ip(text_ip)
                if ip is None:
                    stats.invalid_ip += 1
                    stats.candidates += 1
                    continue
                if ip != text_ip:
                    v = (v[0], ip, *v[2:])
            fast += 1
            append((kind, ts, host, program, v, rule_id))
        stats.candidates += fast
        stats.matched += fast
        return out

    def _row_head(self, head: str) -> tuple[Any, ...]:
        """(log time, host, program, its Plan) of a line's text before its first ": "
        (without a pid) when that is FAST_FRAME's frame whole with a valid stamp; else ().
        Memoised while the framer's stamp cache holds the stamp's year choice."""
        m = _HEAD.fullmatch(head)
        if m is None:
            self._row_heads[head] = ()
            return ()
        stamp, host, program = m.group(1, 7, 8)
        framer = self.framer
        when = framer.stamp_cache.get(stamp) or framer.stamp_time(m)
        if when is None:
            return ()
        plan = self._row_plans.get(program, _UNSEEN)
        if plan is _UNSEEN:
            plan = self._row_plan(program)
        found = (self._epoch.get(when) or self._timestamp(when), host, program,
                 *(plan or (None, None, None, None)))
        if stamp in framer.stamp_cache:
            self._row_heads[head] = found
        return found

    def _row_plan(self, program: str) -> Plan | None:
        """The Plan of a program's rules; None when it has none. Not line_safe() rules: a
        Plan that matches nothing and whose literals send its candidates to the reference."""
        rules = [rule for rule in self.rules if rule.applies_to(program)]
        plan = build_plan(rules) if rules else None
        if rules and plan is None:
            literals = text_literals(rules)
            plan = Plan(_no_match, _no_match, {}, literals)
        if len(self._row_plans) > 4096:
            self._row_plans.clear()
        self._row_plans[program] = plan
        return plan

    def _any_literal(self, line: str) -> bool:
        return any(literal in line for literal in self._text_literals)

    def _reference(self, line: str | bytes) -> list[MessageLine]:
        """parse()'s lines of one line (but for the count of lines)."""
        lines = self.stats.lines
        found = self.parse(line.encode("ascii") if isinstance(line, str) else line)
        self.stats.lines = lines
        return found

    def parse_line(self, line: bytes) -> MessageLine | None:
        """One line through every message rule of its program (the reference path)."""
        found = self._lines([line.rstrip(b"\n")], [(1 << len(self.literals)) - 1], False)
        return MessageLine._make(found[0]) if found else None

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
                append((kind, ts, host or "", program, fields, rule_id))
                break
            else:
                stats.unmatched += 1
        stats.matched += len(out)
        return out

    def _fast_lines(self, raws: list[bytes], masks: list[int]) -> list[MessageLine]:
        """_lines() with the framing and the rule in one regex (FAST_FRAME's form); the
        other lines (other framings, too long, no rule matched) go through _lines()."""
        out: list[Any] = []     # a None holds the place of a line for the slow path
        append = out.append
        slow: list[tuple[int, bytes, int]] = []     # (place in out, line, mask)
        stats, framer = self.stats, self.framer
        framer.frame_lines([])                     # the year caches' daily expiry
        stamp_get, epoch_get = framer.stamp_cache.get, self._epoch.get
        plans_get = self._framed_plans.get
        if len(self._hosts) > 4096:                # its own bound, checked once a chunk
            self._hosts.clear()
        share_host = self._hosts.setdefault        # one object per host name, not per line
        limit = self.max_message
        heads_get = self._heads.get
        for raw, mask in zip(raws, masks, strict=True):
            plans = plans_get(mask) or self._framed_for(mask)
            m = None
            text = raw.decode("utf-8", "replace") if len(raw) <= limit else ""
            # The frame: the text before the first ": " but for the pid (it then repeats for
            # a second), read by _head() once; each rule's pattern is matched after it.
            colon = text.find(": ")
            if colon > 0:
                cut = colon
                if text[colon - 1] == "]":
                    cut = text.rfind("[", 0, colon)
                    if cut < 0 or not text[cut + 1:colon - 1].isdecimal():     # \d+
                        cut = 0                     # no head: the slow path
                head = heads_get(text[:cut]) or self._head(text[:cut])
                if head:
                    stamp, host, program = head
                    for plan in plans:
                        ok = plan[5].get(program)
                        if ok is None:
                            ok = _allow(plan, program)
                        if ok:
                            m = plan[0](text, colon + 2)
                            if m is not None:
                                _match, rule_id, kind, has_ip, _rule, _memo = plan
                                break
            if m is None:
                slow.append((len(out), raw, mask))
                append(None)
                continue
            fields = m.groupdict()
            if has_ip:
                text_ip = fields["ip"]
                if text_ip is not None:
                    ip = canonical_ip(text_ip)
                    if ip is None:
                        stats.invalid_ip += 1
                        stats.candidates += 1
                        continue
                    fields["ip"] = ip
            when = stamp_get(stamp) or framer.stamp_time(_HEAD.match(text))    # type: ignore[arg-type]
            if when is None:
                slow.append((len(out), raw, mask))
                append(None)
                continue
            ts = epoch_get(when) or self._timestamp(when)
            append((kind, ts, share_host(host, host), program, fields, rule_id))
        fast = len(out) - len(slow)
        stats.candidates += fast
        stats.matched += fast
        return self._fill_slow(out, slow) if slow else out

    def _head(self, head: str) -> tuple[str, ...]:
        """(stamp, host, program) of a line's text before its first ": " (without a pid)
        when that is FAST_FRAME's frame whole: FAST_FRAME's message then starts after the
        ": ". Else () (the slow path). Memoised, bounded."""
        m = _HEAD.fullmatch(head)
        found = m.group(1, 7, 8) if m is not None else ()
        if len(self._heads) > 16384:
            self._heads.clear()
        self._heads[head] = found
        return found

    def _fill_slow(self, out: list[Any], slow: list[tuple[int, bytes, int]]) -> list[Any]:
        """The slow path's lines put in their places among the fast ones (the correlation
        needs the log's order)."""
        for place, raw, mask in slow:
            found = self._lines([raw], [mask], False)
            out[place] = found[0] if found else None
        return [line for line in out if line is not None]

    def _framed_for(self, mask: int) -> tuple[_Framed, ...]:
        plans = tuple(self._framed[rule.id] for rule in self.rules
                      if any(self._bit[lit] & mask for lit in rule.prefilters))
        if len(self._framed_plans) > 65536:
            self._framed_plans.clear()
        self._framed_plans[mask] = plans
        return plans

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
        return asdict(self.stats)


def canonical_ip(text: str, _get: Callable[..., Any] = IP_CACHE.get,
                 _v4: Callable[[str], Any] = _CANONICAL_V4.fullmatch) -> str | None:
    """normalize_ip(text), from its cache, or as it is when already canonical IPv4 text."""
    ip = _get(text, _UNSEEN)
    if ip is _UNSEEN:
        ip = text if _v4(text) else normalize_ip(text)
    return ip


def _framed(rule: Rule) -> _Framed:
    regex = re.compile(rule.regex.pattern.removeprefix("^"), rule.regex.flags)
    return (regex.match, rule.id, rule.kind, "ip" in rule.regex.groupindex, rule, {})


def _allow(plan: _Framed, program: str) -> bool:
    memo = plan[5]
    if len(memo) > 4096:
        memo.clear()
    ok = memo[program] = plan[4].applies_to(program)
    return ok


def _plan(rule: Rule) -> _Plan:
    return (rule.regex.search, rule.id, rule.kind, "ip" in rule.regex.groupindex)


def _no_match(_line: str, _pos: int) -> None:
    return None
