"""The parser: chunks of whole log lines in, events out.

Fast path: a prefilter literal must occur in every line its rule matches, so only lines holding
one need a regex. `bytes.find` of one needle runs at memory speed while a regex alternation of
many literals crawls, so the literals are covered by a few shared "trigger" substrings (every
literal contains one), each found in the whole chunk with `find`. A line hit by a trigger is
confirmed by its literals, then framed and tried against the rules of its program. All other
lines cost nothing but the scans. `parse_line` is the slow reference path: every rule, no filter.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .events import Event, make_event, normalize_ip
from .framing import Framer
from .rules import Ruleset


@dataclass
class ParserStats:
    lines: int = 0
    candidates: int = 0           # lines holding a prefilter literal
    events: int = 0
    unknown_framing: int = 0      # candidate lines whose syslog framing is not understood
    invalid_ip: int = 0           # a rule matched but its ip group is no valid address
    rule_errors: int = 0          # a rule raised on a line (should never happen; counted, skipped)
    by_rule: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)


class Parser:
    """Turns bytes of log lines into Events with a compiled Ruleset."""

    def __init__(self, ruleset: Ruleset, clock: Callable[[], float] = time.time) -> None:
        self.ruleset = ruleset
        self.framer = Framer(clock)
        self.stats = ParserStats()
        self.last_unknown: bytes | None = None
        self.triggers = plan_triggers(ruleset.literals)

    def parse(self, chunk: bytes, first_line: int = 1) -> list[Event]:
        """Events of a chunk of whole lines; `first_line` numbers the chunk's first line."""
        events: list[Event] = []
        if not chunk:
            return events
        self.stats.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        find, rfind, count = chunk.find, chunk.rfind, chunk.count
        size = len(chunk)
        lines: dict[int, int] = {}          # start -> end of each confirmed candidate line
        for trigger, literals in self.triggers:
            pos = find(trigger)
            while pos >= 0:
                start = rfind(b"\n", 0, pos) + 1
                end = find(b"\n", pos)
                if end < 0:
                    end = size
                if start not in lines:
                    line = chunk[start:end]
                    for literal in literals:
                        if literal in line:
                            lines[start] = end
                            break
                pos = find(trigger, end)
        counted_to, line_no = 0, first_line
        line_event = self._line
        for start in sorted(lines):
            line_no += count(b"\n", counted_to, start)
            counted_to = start
            event = line_event(chunk[start:lines[start]], line_no, True)
            if event is not None:
                events.append(event)
        return events

    def parse_line(self, line: bytes, line_no: int = 0) -> Event | None:
        """Slow reference path: frame the line and try every rule of its program, no prefilter."""
        return self._line(line.rstrip(b"\n"), line_no, False)

    def _line(self, raw: bytes, line_no: int, prefiltered: bool) -> Event | None:
        stats = self.stats
        if prefiltered:
            stats.candidates += 1
        text = raw.decode("utf-8", "replace")
        frame = self.framer.frame_fast(text)
        if frame is None:
            stats.unknown_framing += 1
            self.last_unknown = raw[:500]
            return None
        when, host, program, message = frame
        for rule in self.ruleset.for_program(program):
            if prefiltered:
                for literal in rule.prefilters:
                    if literal in raw:
                        break
                else:
                    continue
            m = rule.regex.search(message)
            if m is None:
                continue
            ip = normalize_ip(m.group("ip"))
            if ip is None:
                stats.invalid_ip += 1
                continue
            groups = m.groupdict()
            service = rule.service
            if groups.get("service"):
                name = groups["service"].lower()
                service = rule.service_map.get(name, name)
            stats.events += 1
            stats.by_rule[rule.id] += 1
            stats.by_kind[rule.kind] += 1
            return make_event(when, rule.kind, ip, groups.get("user") or None, service, program,
                              rule.id, host, line_no)
        return None

def plan_triggers(literals: Iterable[bytes], min_len: int = 4) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """Few substrings such that every literal contains one: (trigger, literals it stands for).

    Greedy set cover: each scan costs a pass over the chunk, so a substring shared by many
    literals is worth more than a long rare one; among equals the longer (rarer) one wins.
    """
    uncovered = set(literals)
    plan: list[tuple[bytes, tuple[bytes, ...]]] = []
    while uncovered:
        shared: Counter = Counter()
        for lit in uncovered:
            size = min(min_len, len(lit))
            shared.update({lit[i:j] for i in range(len(lit)) for j in range(i + size, len(lit) + 1)})
        best = max(shared, key=lambda sub: (shared[sub], len(sub), sub))
        covered = tuple(sorted(lit for lit in uncovered if best in lit))
        plan.append((best, covered))
        uncovered.difference_update(covered)
    return plan
