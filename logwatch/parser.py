"""The parser: chunks of whole log lines in, events out.

Fast path: a prefilter literal must occur in every line its rule matches, so only lines holding
one need a regex. sre finds a single literal first byte at memory speed but crawls through an
alternation of many literals, so the literals are grouped under a few "pivot" bytes
(plan_scans) and each group is one pass over the whole chunk. A line hit by a pass is framed
and tried against the rules of its program whose literal it holds. All other lines cost
nothing but the passes. `parse_line` is the slow reference path: every rule, no filter.
"""

from __future__ import annotations

import re
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
        self.scans = plan_scans(ruleset.literals)
        self._planned_on_data = False
        self._check_cache: dict[tuple[str, int], tuple[tuple[bytes, frozenset[int]], ...]] = {}

    def parse(self, chunk: bytes, first_line: int = 1) -> list[Event]:
        """Events of a chunk of whole lines; `first_line` numbers the chunk's first line."""
        events: list[Event] = []
        if not chunk:
            return events
        self.stats.lines += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
        if not self._planned_on_data and len(chunk) >= PLAN_SAMPLE:
            # Which substrings are rare depends on the site's log: plan once on real data.
            self.scans = plan_scans(self.ruleset.literals, chunk[:PLAN_SAMPLE])
            self._check_cache.clear()
            self._planned_on_data = True
        find, rfind, count = chunk.find, chunk.rfind, chunk.count
        size = len(chunk)
        # Candidate lines: start -> bit set of the scans that hit the line. A literal in a line
        # always makes its own scan hit that line (matches never cross a newline), so the
        # literals of the hitting scans are all a line can hold.
        hit_by: dict[int, int] = {}
        get = hit_by.get
        for bit, (scan, _literals) in enumerate(self.scans):
            mask = 1 << bit
            end = -1
            for hit in scan.finditer(chunk):
                pos = hit.start()
                if pos < end:
                    continue            # the rest of a line already taken
                start = rfind(b"\n", 0, pos) + 1
                end = find(b"\n", pos)
                if end < 0:
                    end = size
                hit_by[start] = get(start, 0) | mask
        counted_to, line_no = 0, first_line
        line_event = self._line
        for start in sorted(hit_by):
            end = find(b"\n", start)
            if end < 0:
                end = size
            line_no += count(b"\n", counted_to, start)
            counted_to = start
            event = line_event(chunk[start:end], line_no, hit_by[start])
            if event is not None:
                events.append(event)
        return events

    def _checks(self, program: str, scans_hit: int) -> tuple[tuple[bytes, frozenset[int]], ...]:
        """The (literal, rule positions) checks of a program limited to the scans that hit."""
        key = (program, scans_hit)
        checks = self._check_cache.get(key)
        if checks is None:
            allowed = {lit for bit, (_scan, lits) in enumerate(self.scans) if scans_hit >> bit & 1
                       for lit in lits}
            checks = tuple(c for c in self.ruleset.literal_checks(program) if c[0] in allowed)
            if len(self._check_cache) > 65536:
                self._check_cache.clear()
            self._check_cache[key] = checks
        return checks

    def parse_line(self, line: bytes, line_no: int = 0) -> Event | None:
        """Slow reference path: frame the line and try every rule of its program, no prefilter."""
        return self._line(line.rstrip(b"\n"), line_no, 0)

    def _line(self, raw: bytes, line_no: int, scans_hit: int) -> Event | None:
        """The event of one line; `scans_hit` (bit set of self.scans) 0 means no prefilter."""
        stats = self.stats
        if scans_hit:
            stats.candidates += 1
        text = raw.decode("utf-8", "replace")
        frame = self.framer.frame_fast(text)
        if frame is None:
            stats.unknown_framing += 1
            self.last_unknown = raw[:500]
            return None
        when, host, program, message = frame
        rules = self.ruleset.for_program(program)
        if scans_hit:
            # Only rules whose literal is in the line can match it; keep their order.
            admitted: set[int] = set()
            for literal, positions in self._checks(program, scans_hit):
                if literal in raw:
                    admitted |= positions
            if not admitted:
                return None
            rules = [rules[i] for i in sorted(admitted)]
        for rule in rules:
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

# Costs in microseconds, measured with CPython 3.11's sre: one pass looking for a pivot byte
# (its literal-prefix search) per ~130-byte log line, each occurrence of the pivot (a branch
# attempt, growing with the number of branches), and each match (a candidate line cut out).
PASS_COST = 0.035
OCCURRENCE_COST = 0.006
BRANCH_COST = 0.0012
MATCH_COST = 0.5
LINE_BYTES = 130
PLAN_SAMPLE = 1 << 18
MIN_TAIL = 3


def _static_frequencies() -> list[float]:
    """Rough byte frequencies of a mail log, used until the log itself has been seen."""
    freq = [0.002] * 256
    for ch in b"etaoinsrhldcumfpgwybvkxjqz":
        freq[ch] = 0.04
    for ch in b"etaoinsr":
        freq[ch] = 0.07
    for ch in b"0123456789":
        freq[ch] = 0.03
    for ch in b" .:=<>[],-/()@_":
        freq[ch] = 0.02
    freq[ord(" ")] = 0.15
    return freq


def plan_scans(literals: Iterable[bytes], sample: bytes = b"") -> list[tuple[re.Pattern[bytes], tuple[bytes, ...]]]:
    """Regex passes that together find every literal: [(pattern, literals it stands for)].

    A pass looks for one pivot byte followed by the rest of its literals, `U(?:ser unk|NKNOWN)`:
    sre scans for a single literal first byte at memory speed and tries the branches only
    where it occurs, so a rare pivot shared by many literals covers them all in one pass.
    Weighted greedy set cover over pivot bytes; with a `sample` of the log, byte frequencies
    and how often each pivot-and-tail occurs are measured rather than guessed.
    """
    if sample:
        counts = Counter(sample)
        total = max(1, len(sample))
        freq = [counts.get(b, 0) / total for b in range(256)]
        lines = max(1, sample.count(b"\n"))
    else:
        freq = _static_frequencies()
    match_rate: dict[bytes, float] = {}

    def tail_matches(needle: bytes) -> float:
        """Matches per line of pivot+tail: measured in the sample, else assumed rare."""
        if not sample:
            return 0.0
        rate = match_rate.get(needle)
        if rate is None:
            rate = match_rate[needle] = sample.count(needle) / lines
        return rate

    uncovered = set(literals)
    plan: list[tuple[re.Pattern[bytes], tuple[bytes, ...]]] = []
    while uncovered:
        holders: dict[int, list[bytes]] = {}
        for lit in uncovered:
            # A pivot needs a few bytes after it, or every occurrence of the byte is a hit.
            usable = set(lit[:-MIN_TAIL]) if len(lit) > MIN_TAIL else set(lit[:1])
            for byte in usable:
                holders.setdefault(byte, []).append(lit)

        def cost(byte: int, holders: dict[int, list[bytes]] = holders) -> tuple:
            group = holders[byte]
            matches = sum(tail_matches(lit[lit.index(byte):]) for lit in group)
            per_line = (PASS_COST + MATCH_COST * matches
                        + freq[byte] * LINE_BYTES * (OCCURRENCE_COST + BRANCH_COST * len(group)))
            return (per_line / len(group), byte)

        pivot = min(holders, key=cost)
        group = tuple(sorted(holders[pivot]))
        # Each literal contributes what follows its first pivot: its longest, rarest tail.
        tails = {lit[lit.index(pivot) + 1:] for lit in group}
        if b"" in tails:
            pattern = re.escape(bytes([pivot]))
        else:
            branches = sorted(tails, key=lambda t: (-len(t), t))
            pattern = re.escape(bytes([pivot])) + b"(?:" + b"|".join(map(re.escape, branches)) + b")"
        plan.append((re.compile(pattern), group))
        uncovered.difference_update(group)
    return plan
