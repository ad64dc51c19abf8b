"""The parser: chunks of whole log lines in, events out.

Fast path: a prefilter literal must occur in every line its rule matches, so only lines holding
one need a regex. A literal matcher (logwatch.parsing.literalscan) finds those lines in whole-chunk
passes; each such line is framed and tried, in rule order, against only the rules of its
program whose literal it holds. All other lines cost nothing but the matcher's passes.
`parse_line` is the slow reference path: every rule of the program, no prefilter.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat
from operator import attrgetter

from logwatch.clock import Clock, wall
from logwatch.parsing.events import IP_CACHE, Event, normalize_ip
from logwatch.parsing.framing import Framer
from logwatch.parsing.literalscan import make_matcher
from logwatch.parsing.rules import Rule, Ruleset

# One rule ready to run: (bound regex search, id, kind, service, service_map, and the numbers
# of its "ip", "user" and "service" groups, 0 where it has none).
_RulePlan = tuple[Callable[[str], re.Match[str] | None], str, str, str | None, dict[str, str],
                  int, int, int]


_rule_of, _line_of = attrgetter("rule"), attrgetter("line")
_UNSEEN = object()
_new_object, _set_attribute = object.__new__, object.__setattr__
_ip_cache_get = IP_CACHE.get
log = logging.getLogger("logwatchd.parser")

# The longest message (text after the syslog tag) handed to the rules; longer lines are skipped
# and counted. It bounds what any regex can cost on one line; the load-time probe
# (logwatch.parsing.rulecheck) times every rule on hostile lines of this length.
MAX_MESSAGE = 16384
# One regex search may take this much (seconds); a rule over it is quarantined (not run) for
# QUARANTINE seconds. Python's re cannot be interrupted, so this is measured after the fact.
RULE_BUDGET = 0.05
QUARANTINE = 600.0


@dataclass
class ParserStats:
    lines: int = 0
    candidates: int = 0           # lines holding a prefilter literal of their program's rules
    events: int = 0
    unknown_framing: int = 0      # lines with a literal whose syslog framing is not understood
    invalid_ip: int = 0           # a rule matched but its ip group is no valid address
    too_long: int = 0             # lines whose message is over max_message: not given to rules
    over_budget: Counter = field(default_factory=Counter)   # rule id -> searches over budget
    quarantined_lines: int = 0    # lines a quarantined rule was not tried on
    by_rule: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)


class Parser:
    """Turns bytes of log lines into Events with a compiled Ruleset."""

    def __init__(self, ruleset: Ruleset, clock: Clock = wall,
                 matcher: str = "auto", max_message: int = MAX_MESSAGE,
                 budget: float = RULE_BUDGET, quarantine: float = QUARANTINE) -> None:
        self.ruleset = ruleset
        self.max_message, self.budget, self.quarantine = max_message, budget, quarantine
        self.quarantined: dict[str, float] = {}      # rule id -> time.monotonic() it ends
        self.on_quarantine: Callable[[str], None] | None = None   # the daemon's error list
        self.framer = Framer(clock)
        self.stats = ParserStats()
        self.last_unknown: bytes | None = None
        self.matcher = make_matcher(ruleset.literals, matcher)
        self._bit = {lit: 1 << i for i, lit in enumerate(ruleset.literals)}
        self._plans: dict[Rule, _RulePlan] = {
            rule: (rule.regex.search, rule.id, rule.kind, rule.service, rule.service_map,
                   *(rule.regex.groupindex.get(name, 0) for name in ("ip", "user", "service")))
            for rule in ruleset.rules}
        self._kind_of_rule = {rule.id: rule.kind for rule in ruleset.rules}
        # program -> [(rule plan, bit set of its literals)], in match order
        self._program_rules: dict[str, list[tuple[_RulePlan, int]]] = {}
        # (program, literal bit set) -> rule plans to try
        self._admitted: dict[tuple[str, int], tuple[_RulePlan, ...]] = {}
        self._mask_literals: dict[int, list[tuple[bytes, int]]] = {}
        self._literals_of_program: dict[str, int] = {}
        self._all_literals = (1 << len(ruleset.literals)) - 1   # no prefilter: every rule

    def parse(self, chunk: bytes, first_line: int = 1) -> list[Event]:
        """Events of a chunk of whole lines; `first_line` numbers the chunk's first line."""
        return self._parse(chunk, first_line)[0]

    def parse_marked(self, chunk: bytes, first_line: int = 1) -> tuple[list[Event], list[int]]:
        """parse(), and where in the chunk the lines that gave an event start, ascending
        (test-rules' diagnostics need not look at them again)."""
        events, starts, line_nos = self._parse(chunk, first_line)
        start_of = dict(zip(line_nos, starts, strict=True))
        return events, list(map(start_of.__getitem__, map(_line_of, events)))

    def _parse(self, chunk: bytes, first_line: int) -> tuple[list[Event], list[int], list[int]]:
        """(events, candidate line starts, their line numbers)."""
        if not chunk:
            return [], [], []
        if self.quarantined:
            self._release()
        starts, masks = self.matcher.candidates(chunk)
        count, find = chunk.count, chunk.find
        # C-level map()s, no Python step per line: the newlines before each candidate line
        # (its number), where it ends, the line itself.
        ends = list(map(find, repeat(b"\n"), starts))
        if ends and ends[-1] < 0:
            ends[-1] = len(chunk)        # the last line, without a newline
        line_nos = list(accumulate(map(count, repeat(b"\n"), chain((0,), starts), starts),
                                   initial=first_line))[1:]
        stats = self.stats
        last = line_nos[-1] if line_nos else first_line
        stats.lines += (last - first_line + count(b"\n", starts[-1] if starts else 0)
                        + (0 if chunk.endswith(b"\n") else 1))
        raws = list(map(chunk.__getitem__, map(slice, starts, ends)))
        events, candidates = self._events(raws, masks, line_nos, not self.matcher.exact)
        stats.candidates += candidates
        return events, starts, line_nos

    def parse_line(self, line: bytes, line_no: int = 0) -> Event | None:
        """Slow reference path: frame the line and try every rule of its program, no prefilter."""
        events, _candidates = self._events([line.rstrip(b"\n")], [self._all_literals],
                                           [line_no], False)
        return events[0] if events else None

    def _events(self, raws: list[bytes], masks: list[int], line_nos: list[int],
                check: bool) -> tuple[list[Event], int]:
        """The events of lines (each tried against its program's rules with a literal in its
        mask; `check`: the masks over-report, keep the literals really there), and how many
        lines held such a literal. Written out for the common case: most of the parse time."""
        events: list[Event] = []
        append = events.append
        candidates = 0
        stats, framer = self.stats, self.framer
        admitted_get = self._admitted.get
        max_message, budget, now = self.max_message, self.budget, time.perf_counter
        texts = list(map(bytes.decode, raws, repeat("utf-8"), repeat("replace")))
        for raw, frame, mask, line_no in zip(raws, framer.frame_lines(texts), masks, line_nos,
                                             strict=True):
            if frame is None:
                stats.unknown_framing += 1
                self.last_unknown = raw[:500]
                continue
            when, host, program, message = frame
            if len(message) > max_message:
                stats.too_long += 1
                continue
            if check:
                mask = self._present(raw, mask & self._program_literals(program))
            plans = admitted_get((program, mask)) or self._rules_for(program, mask)
            if not plans:
                continue                # no literal of this program's rules
            candidates += 1
            started = now()
            for search, rule_id, kind, service, service_map, ip_group, user_group, service_group in plans:
                rm = search(message)
                took = now() - started
                if took > budget:
                    self._over_budget(search, rule_id, message, took, line_no)
                    started = now()
                else:
                    started += took
                if rm is None:
                    continue
                ip = _ip_cache_get(rm.group(ip_group), _UNSEEN)
                if ip is _UNSEEN:
                    ip = normalize_ip(rm.group(ip_group))
                if ip is None:
                    stats.invalid_ip += 1
                    continue
                if service_group:
                    name = rm.group(service_group)
                    if name:
                        name = name.lower()
                        service = service_map.get(name, name)
                event = _new_object(Event)      # frozen: one __dict__, not nine setattrs
                _set_attribute(event, "__dict__", {
                    "time": when, "kind": kind, "ip": ip, "service": service, "host": host,
                    "user": (rm.group(user_group) or None) if user_group else None,
                    "program": program, "rule": rule_id, "line": line_no})
                append(event)
                break
        if events:
            self._count(events)
        return events, candidates

    def _count(self, events: list[Event]) -> None:
        """Add a chunk's events to the statistics, by rule and by kind."""
        stats = self.stats
        stats.events += len(events)
        by_rule = Counter(map(_rule_of, events))
        stats.by_rule.update(by_rule)
        for rule_id, n in by_rule.items():
            stats.by_kind[self._kind_of_rule[rule_id]] += n

    def _over_budget(self, search: Callable[[str], object], rule_id: str, message: str,
                     took: float, line_no: int) -> None:
        """A search took longer than the budget: if the CPU time of a second run confirms it
        (not just a descheduled process), quarantine the rule."""
        started = time.thread_time()
        search(message)
        cpu = time.thread_time() - started
        if cpu <= self.budget or not self.quarantine:
            return
        self.stats.over_budget[rule_id] += 1
        self.quarantined[rule_id] = time.monotonic() + self.quarantine
        text = (f"rule {rule_id} quarantined for {self.quarantine:.0f}s: one search took "
                f"{max(took, cpu):.3f}s (budget {self.budget:.3f}s) on a {len(message)}-character "
                f"line; its regex backtracks on such lines: fix the rule")
        log.error("action=rule-quarantined rule=%s took=%.3fs budget=%.3fs line=%d length=%d "
                  "for=%.0fs (its regex backtracks on such lines: fix the rule)",
                  rule_id, max(took, cpu), self.budget, line_no, len(message), self.quarantine)
        if self.on_quarantine is not None:
            self.on_quarantine(text)
        self._replan()

    def quarantine_left(self) -> dict[str, float]:
        """Seconds each quarantined rule stays out of use (for `status`)."""
        now = time.monotonic()
        return {rule_id: round(max(0.0, until - now), 1) for rule_id, until in self.quarantined.items()}

    def _release(self) -> None:
        """End the quarantines that are over."""
        now = time.monotonic()
        over = [rule_id for rule_id, until in self.quarantined.items() if until <= now]
        for rule_id in over:
            del self.quarantined[rule_id]
            log.warning("action=rule-released rule=%s", rule_id)
        if over:
            self._replan()

    def _replan(self) -> None:
        """Rebuild the rule plans: a quarantined rule's search only counts the line."""
        def skipped(_message: str) -> None:
            self.stats.quarantined_lines += 1

        for rule in self.ruleset.rules:
            plan = self._plans[rule]
            search = skipped if rule.id in self.quarantined else rule.regex.search
            self._plans[rule] = (search, *plan[1:])
        self._program_rules.clear()
        self._admitted.clear()

    def _present(self, raw: bytes, mask: int) -> int:
        """The literals of `mask` (a matcher's over-report) that really are in the line."""
        present = 0
        for literal, bit in self._literal_bits(mask):
            if literal in raw:
                present |= bit
        return present

    def _program_literals(self, program: str) -> int:
        """Bit set of the literals of a program's rules (memoised)."""
        bits = self._literals_of_program.get(program)
        if bits is None:
            bits = 0
            for rule in self.ruleset.for_program(program):
                for literal in rule.prefilters:
                    bits |= self._bit[literal]
            if len(self._literals_of_program) < 4096:
                self._literals_of_program[program] = bits
        return bits

    def _literal_bits(self, mask: int) -> list[tuple[bytes, int]]:
        cache = self._mask_literals
        pairs = cache.get(mask)
        if pairs is None:
            pairs = [(lit, bit) for lit, bit in self._bit.items() if mask & bit]
            if len(cache) > 4096:
                cache.clear()
            cache[mask] = pairs
        return pairs

    def _rules_for(self, program: str, mask: int) -> tuple[_RulePlan, ...]:
        """Rule plans of `program` with a literal in `mask`, in match order (memoised)."""
        key = (program, mask)
        plans = self._admitted.get(key)
        if plans is None:
            by_rule = self._program_rules.get(program)
            if by_rule is None:
                by_rule = [(self._plans[rule], sum(self._bit[lit] for lit in rule.prefilters))
                           for rule in self.ruleset.for_program(program)]
                if len(self._program_rules) < 4096:
                    self._program_rules[program] = by_rule
            plans = tuple(plan for plan, bits in by_rule if bits & mask)
            if len(self._admitted) > 65536:
                self._admitted.clear()
            self._admitted[key] = plans
        return plans
